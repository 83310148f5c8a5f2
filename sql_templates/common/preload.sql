-- Load Keras (and jax's compilation cache) in virtual segment {{segment}}'s backend ahead of its
-- warm-up, while the source is checked and packed (ctq.probe imports them).
SELECT ctq.probe() IS NOT NULL;

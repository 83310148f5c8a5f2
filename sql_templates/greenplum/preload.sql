-- Load Keras (and jax's compilation cache) in segment {{segment}}'s writer process ahead of its
-- warm-up, while the source is checked and packed (hop_functions.sql: ctq.gp_preload).
SELECT ctq.gp_preload({{segment}});

-- The memory check before a segment's warm-up (coordinator._check_memory): each model's state
-- size and the server's memory, counted in the segment's own backend. $1 the parameters (models,
-- stats, task). On PostgreSQL every virtual segment shares the one server ("sharing": NULL, the
-- client counts the run's segments).
SELECT ctq.model_sizes($1::text)::text AS sizes, NULL::int AS sharing;

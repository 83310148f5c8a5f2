-- The run's lock for this transaction only (ctq rm: no coordinator may drive it meanwhile): $1 class, $2 run.
SELECT pg_try_advisory_xact_lock($1::int, $2::int)

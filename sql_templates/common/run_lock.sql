-- A coordinator's lock on the run it drives, for its session (run_alive.sql reads it): $1 the lock class, $2 the run.
SELECT pg_try_advisory_lock($1::int, $2::int)

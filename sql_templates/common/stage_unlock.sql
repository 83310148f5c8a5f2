-- The end of stage_lock.sql.
SELECT pg_advisory_unlock($1::int, hashtext($2))

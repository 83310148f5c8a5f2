-- stage_lock.sql without waiting: whether the stage is free.
SELECT pg_try_advisory_lock($1::int, hashtext($2))

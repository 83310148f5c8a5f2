-- The end of pack_lock.sql.
SELECT pg_advisory_unlock(hashtext($1))

-- One installer at a time (held until the install's transaction ends): $1 the lock's key.
SELECT pg_advisory_xact_lock($1::int8)

-- A scoring stage table's lock for the session: $1 the lock class, $2 the table's name.
SELECT pg_advisory_lock($1::int, hashtext($2))

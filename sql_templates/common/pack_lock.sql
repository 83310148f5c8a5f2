-- Packing pack $1 (its digest): one packer at a time, for the session (pack_unlock.sql ends it).
SELECT pg_advisory_lock(hashtext($1))

-- A pack's lock for this transaction (held while it is packed: packing.pack_lock): $1 the pack id.
SELECT pg_try_advisory_xact_lock(hashtext($1))

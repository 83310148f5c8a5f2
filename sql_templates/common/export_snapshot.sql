-- One moment for the sessions of a preparation (profile + packing, row check + scoring).
SELECT pg_export_snapshot() AS name, now() AS as_of

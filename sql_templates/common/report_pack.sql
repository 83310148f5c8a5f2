-- The run's pack as the caller sees it (row-level security: only if it can read the source now).
SELECT p.pack_id, p.table_name, p.source_table, p.packed_by, p.created_at, p.source_fingerprint,
       p.stats::text AS stats, p.settings::text AS settings
FROM ctq.packs p WHERE p.pack_id = $1;

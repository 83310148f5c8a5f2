SELECT p.pack_id, p.table_name, p.settings::text AS settings, p.stats::text AS stats, p.source_schema, p.source_name
FROM ctq.packs p WHERE p.pack_id = (SELECT r.pack_id FROM ctq.runs r WHERE r.run_id = $1);

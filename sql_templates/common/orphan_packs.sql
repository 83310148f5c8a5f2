-- Pack tables without a ctq.packs row: left by a packing that died (or is running right now: the
-- caller checks the pack's advisory lock before dropping one). ctq.pack_is_catalogued sees every
-- row: a pack whose source the caller cannot read is not orphaned.
SELECT substr(c.relname, 6) AS pack_id, 'ctq_data.' || c.relname AS table_name, {{size}} AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'ctq_data' AND c.relkind IN ('r', 'p') AND c.relname ~ '^pack_[0-9a-f]{16}$'
  AND NOT ctq.pack_is_catalogued(substr(c.relname, 6))
ORDER BY c.relname;

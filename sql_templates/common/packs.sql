-- Every pack the caller can see (row-level security: those whose source it can read), with the
-- size of its table (NULL when the table is gone) and the runs that use it.
SELECT p.pack_id, p.source_table, p.table_name, p.created_at, p.packed_by,
       (p.stats ->> 'rows')::bigint AS rows, (p.settings ->> 'segments')::int AS segments,
       {{size}} AS bytes,
       (SELECT count(*) FROM ctq.runs r WHERE r.pack_id = p.pack_id) AS runs,
       (SELECT max(r.started_at) FROM ctq.runs r WHERE r.pack_id = p.pack_id) AS last_used
FROM ctq.packs p
LEFT JOIN (pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'ctq_data')
       ON c.relname = 'pack_' || p.pack_id
ORDER BY p.created_at, p.pack_id;

-- The tables that hold rows of a run, as `ctq rm` deletes them: every table of the catalog schema
-- ({{catalog}}: catalog_schema.sql) with a run_id column, named as schema ctq shows it (the table
-- itself on PostgreSQL, its filtering view on Greenplum, where the catalog is ctq_catalog), runs
-- last and models just before it: what refers to a run goes first (Greenplum does not enforce the
-- foreign keys, so nothing cascades there). Read from the catalog, so a new table is never left out.
SELECT c.relname AS name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = '{{catalog}}' AND c.relkind IN ('r', 'p')
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = c.oid AND a.attname = 'run_id' AND NOT a.attisdropped)
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_class v JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
              WHERE vn.nspname = 'ctq' AND v.relname = c.relname)
ORDER BY c.relname = 'runs', c.relname = 'models', c.relname;

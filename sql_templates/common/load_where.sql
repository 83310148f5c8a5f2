-- `ctq load`: where the new table $1 (a possibly qualified, quoted name) landed, as schema.table.
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1::regclass;

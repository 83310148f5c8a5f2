-- $1 schema (NULL: search_path), $2 name; exact (case-sensitive) names.
SELECT c.oid, n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (n.nspname = $1 OR ($1 IS NULL AND n.nspname = ANY (current_schemas(false))))
ORDER BY array_position(current_schemas(false), n.nspname::name)
LIMIT 1;

-- $1 schema (NULL: search_path), $2 name; exact (case-sensitive) names. display: the name as SQL
-- takes it, quoted only where it must be (the server's quote_ident: public."where", public.sales).
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS display
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (n.nspname = $1 OR ($1 IS NULL AND n.nspname = ANY (current_schemas(false))))
ORDER BY (SELECT min(i) FROM generate_series(1, array_length(current_schemas(false), 1)) i
          WHERE (current_schemas(false))[i] = n.nspname)
LIMIT 1;

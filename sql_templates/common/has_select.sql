-- Whether this session's role may read relation $1 (an oid): USAGE on its schema and SELECT on it,
-- each said apart so that a refusal names every grant it takes.
SELECT has_schema_privilege(c.relnamespace, 'USAGE') AS schema_usage,
       has_table_privilege(c.oid, 'SELECT') AS can_select
FROM pg_class c WHERE c.oid = $1::oid

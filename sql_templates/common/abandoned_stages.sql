-- Staging tables of ctq predict / evaluate that the caller owns, in any schema: predictions being
-- written (ctq_predict_<hex>, in the schema of --out) and, on Greenplum, the rows being scored
-- (ctq_data.score_<hex>). Whether one is abandoned is its advisory lock's business (scoring.py).
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND pg_has_role(c.relowner, 'USAGE')
  AND (c.relname ~ '^ctq_predict_[0-9a-f]{16}$'
       OR (n.nspname = 'ctq_data' AND c.relname ~ '^score_[0-9a-f]{16}$'))
ORDER BY 1, 2;

(SELECT {{computed}} FROM {{source}} t) t
CROSS JOIN LATERAL (VALUES {{rows}}) c({{names}})
-- The rows of a batched scan (sql.column_batches): each source row t becomes one row per batch
-- (alias c). The row's expressions are the columns of a subquery that PostgreSQL pulls up into the
-- scan, so the plan is that of the VALUES rows over the source itself (a single batch row is
-- pulled up too, and the scan keeps its parallel plan).

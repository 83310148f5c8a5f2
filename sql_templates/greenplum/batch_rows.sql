(SELECT {{computed}} FROM {{source}} t OFFSET 0) t
CROSS JOIN LATERAL (VALUES {{rows}}) c({{names}})
-- The rows of a batched scan (sql.column_batches): each source row t becomes one row per batch
-- (alias c). OFFSET 0 keeps the subquery, so each of the row's expressions is computed once a row
-- and the VALUES rows only pass columns on: flattened, the planner puts an expression into every
-- aggregate that reads it (the two-hash row key, 66 times a row), and Greenplum 6 (PostgreSQL 9.4)
-- sets a VALUES row's expressions up again for every source row, function lookups included
-- (1M rows x 32 values on 2 segments: 10 s, against 5 s with the expressions here).

(SELECT {{columns}} FROM {{source}} t OFFSET 0) c
-- The one batch row of each source row (sql.column_batches), alias c. OFFSET 0 keeps the
-- subquery, so that each expression is computed once a row (batch_rows.sql).

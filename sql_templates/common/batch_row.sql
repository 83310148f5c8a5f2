(SELECT {{columns}} FROM {{source}} t) c
-- The one batch row of each source row (sql.column_batches), alias c: a subquery that PostgreSQL
-- pulls up into the scan.

-- The rows of table (a quoted name).
SELECT count(*) FROM {{table}}

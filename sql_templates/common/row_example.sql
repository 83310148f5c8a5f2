-- The smallest id of the rows of {{source}} (alias t) where {{condition}} holds, as text (a
-- refusal names it: one row to look at, the same at every try).
SELECT t.{{id}}::text FROM {{source}} t WHERE {{condition}} ORDER BY t.{{id}} LIMIT 1

-- The smallest id of {{source}} that more than one row has, as text (a refusal names it).
SELECT t.{{id}}::text FROM {{source}} t WHERE t.{{id}} IS NOT NULL GROUP BY t.{{id}} HAVING count(*) > 1
ORDER BY t.{{id}} LIMIT 1

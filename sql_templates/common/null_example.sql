-- The id of one row of {{source}} whose {{column}} is NULL, as text (a refusal names it).
SELECT t.{{id}}::text FROM {{source}} t WHERE t.{{column}} IS NULL LIMIT 1

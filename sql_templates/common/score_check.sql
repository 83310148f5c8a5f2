-- The checks of a table to score, in one read-only scan: rows; ids present and distinct; per
-- feature the NULLs and the bad values (NaN or infinite; for an array, another length); the
-- label's NULLs and bad values (not one of the model's classes, or not finite) for ctq evaluate.
SELECT count(*) AS n, count({{id}}) AS ids, count(DISTINCT {{id}}) AS distinct_ids,
       ARRAY[{{nulls}}]::int8[] AS nulls, ARRAY[{{bad}}]::int8[] AS bad,
       {{label_nulls}}::int8 AS label_nulls, {{label_bad}}::int8 AS label_bad
FROM {{source}} t

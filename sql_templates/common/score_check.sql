-- The checks of a table to score, in one read-only scan: rows; ids present and distinct; per
-- feature the NULLs and the bad values (NaN or infinite; for an array, another length); the
-- label's NULLs and bad values (not one of the model's classes, or not finite) for ctq evaluate.
-- The features come in batches (sql.column_batches): one result row per batch, each checking the
-- same slots, so the statement's width stays the same at any number of columns; the row-level
-- counts are the same in every batch (the distinct ids: counted in batch 0 only).
SELECT c.ctq_batch, count(*) AS n, count({{id}}) AS ids,
       count(DISTINCT {{id}}) FILTER (WHERE c.ctq_batch = 0) AS distinct_ids,
       ARRAY[{{nulls}}]::int8[] AS nulls, ARRAY[{{bad}}]::int8[] AS bad,
       {{label_nulls}}::int8 AS label_nulls, {{label_bad}}::int8 AS label_bad
FROM {{batches}}
GROUP BY c.ctq_batch

-- One scan of the source: row count, per-column NULL and non-finite counts, label checks and an
-- order-independent content fingerprint (so a changed table gets packed again).
-- {{columns}} are quoted identifiers; {{label}} the quoted label column.
SELECT count(*) AS n,
       ARRAY[{{null_counts}}]::bigint[] AS nulls,
       ARRAY[{{nonfinite_counts}}]::bigint[] AS nonfinite,
       count(DISTINCT {{label}}) AS label_values,
       count(*) FILTER (WHERE {{label}}::float8 <> round({{label}}::float8)) AS label_fractional,
       coalesce(sum(hashtextextended(ROW({{columns}})::text, 0)::numeric), 0)::text AS fingerprint
FROM {{source}};

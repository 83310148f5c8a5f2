-- One scan of the source: row count, per-column NULL counts and an order-independent content
-- fingerprint (so a changed table gets packed again). {{columns}} are quoted identifiers.
SELECT count(*) AS n,
       ARRAY[{{null_counts}}]::bigint[] AS nulls,
       coalesce(sum(hashtextextended(ROW({{columns}})::text, 0)::numeric), 0)::text AS fingerprint
FROM {{source}};

-- One read-only scan of the source: row count, per-value non-NULL counts, min and max (NaN and
-- infinities show there), the training rows' mean and variance of each value (the numeric features,
-- then the label; the validation split is the same seeded key packing uses), label checks, and an
-- order-independent content fingerprint that changes with any change of a row (so a changed table
-- gets packed again). The values come in batches (sql.column_batches): one result row per batch,
-- each aggregating the same slots, so the statement's width (and its parallel
-- partial aggregate's row) stays the same at any number of columns. The row-level aggregates are
-- the same in every batch; the fingerprint is summed in batch 0 only. The row's validation flag and
-- version are batch columns (c.ctq_validation, c.ctq_version); batch_rows.sql says where an
-- engine computes them (on Greenplum once a row, not once per aggregate that reads them).
SELECT c.ctq_batch, count(*) AS n,
       ARRAY[{{counts}}]::bigint[] AS counts,
       ARRAY[{{mins}}]::float8[] AS mins,
       ARRAY[{{maxs}}]::float8[] AS maxs,
       ARRAY[{{means}}]::float8[] AS means,
       ARRAY[{{variances}}]::float8[] AS variances,
       count(*) FILTER (WHERE NOT c.ctq_validation) AS train_rows,
       count({{label_column}}) AS label_count,
       count(*) FILTER (WHERE {{label}} <> round({{label}})) AS label_fractional,
       coalesce(sum(c.ctq_version::numeric) FILTER (WHERE c.ctq_batch = 0), 0)::text AS fingerprint
FROM {{batches}}
GROUP BY c.ctq_batch;

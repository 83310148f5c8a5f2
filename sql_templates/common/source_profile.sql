-- One read-only scan of the source: row count, per-value non-NULL counts, whether any is NaN or
-- infinite, the training rows' mean and variance of each value (the numeric features,
-- then the label; the validation split is the same seeded key packing uses), label checks, and an
-- order-independent content fingerprint that changes with any change of a row (so a changed table
-- gets packed again). The values come in batches (sql.column_batches): one result row per batch,
-- each aggregating the same slots, so the statement's width (and its parallel
-- partial aggregate's row) stays the same at any number of columns. The row-level aggregates are
-- the same in every batch; the fingerprint is summed in batch 0 only. The row's validation flag and
-- version are batch columns (c.ctq_validation, c.ctq_version); batch_rows.sql says where an
-- engine computes them (on Greenplum once a row, not once per aggregate that reads them).
-- The per-value statistics are the engine's (Engine.profile_statement).
SELECT c.ctq_batch, count(*) AS n,
       ARRAY[{{counts}}]::bigint[] AS counts,
       ARRAY[{{finite}}]::boolean[] AS finite,
       ARRAY[{{means}}]::float8[] AS means,
       ARRAY[{{variances}}]::float8[] AS variances,
{{include columns/source_profile.sql}}
FROM {{batches}}
GROUP BY c.ctq_batch;

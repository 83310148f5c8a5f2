-- The source profile (common/source_profile.sql) on Greenplum, where ctq.moments is installed:
-- the inner statement aggregates each value's moments over the training and over the validation
-- rows (two aggregates a value), the outer one derives the same columns from them
-- (GreenplumEngine.profile_statement).
SELECT a.ctq_batch, a.n,
       ARRAY[{{counts}}]::bigint[] AS counts,
       ARRAY[{{finite}}]::boolean[] AS finite,
       ARRAY[{{means}}]::float8[] AS means,
       ARRAY[{{variances}}]::float8[] AS variances,
       a.train_rows, a.label_count, a.label_fractional, a.fingerprint
FROM (SELECT c.ctq_batch, count(*) AS n, {{moments}},
{{include columns/source_profile.sql}}
      FROM {{batches}}
      GROUP BY c.ctq_batch) a;

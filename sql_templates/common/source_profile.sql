-- One read-only scan of the source: row count, per-column non-NULL counts, min and max (NaN and
-- infinities show there), the training rows' mean and variance of each feature and of the label
-- (the validation
-- split is the same seeded key packing uses), label checks, and an order-independent content
-- fingerprint that changes with any change of a row (so a changed table gets packed again).
SELECT count(*) AS n,
       ARRAY[{{counts}}]::bigint[] AS counts,
       ARRAY[{{mins}}]::float8[] AS mins,
       ARRAY[{{maxs}}]::float8[] AS maxs,
       ARRAY[{{means}}]::float8[] AS means,
       ARRAY[{{variances}}]::float8[] AS variances,
       count(*) FILTER (WHERE NOT t.ctq_validation) AS train_rows,
       count(*) FILTER (WHERE {{label}} <> round({{label}})) AS label_fractional,
       avg({{label}}) FILTER (WHERE NOT t.ctq_validation) AS label_mean,
       var_pop({{label}}) FILTER (WHERE NOT t.ctq_validation) AS label_var,
       coalesce(sum(t.ctq_version::numeric), 0)::text AS fingerprint
FROM (SELECT s.*, abs(({{key}}) % {{modulus}}) < {{cut}} AS ctq_validation, {{version}} AS ctq_version
      FROM {{source}} s) t;

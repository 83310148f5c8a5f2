       count(*) FILTER (WHERE NOT c.ctq_validation) AS train_rows,
       count({{label_column}}) AS label_count,
       count(*) FILTER (WHERE {{label}} <> round({{label}})) AS label_fractional,
       coalesce(sum(c.ctq_version::numeric) FILTER (WHERE c.ctq_batch = 0), 0)::text AS fingerprint

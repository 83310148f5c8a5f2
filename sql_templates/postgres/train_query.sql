-- The targeted query of virtual segment {{segment}}: its partition plus the validation partition;
-- buffer rows are skipped when this backend has them cached already (the marker row stays).
SELECT ctq.train_step(b.segment, b.bucket, b.rows, b.x, b.y, b.k, {{state}}, {{params}}) AS r
FROM {{pack_table}} b
WHERE b.segment IN ({{segment}}, -1) AND (b.bucket < 0 OR NOT ctq.data_cached('{{pack_id}}', {{segment}}))

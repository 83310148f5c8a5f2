-- The targeted query of virtual segment {{segment}}: its partition plus the validation partition;
-- The rows filter skips the buffer rows when this backend has them cached already (the marker row
-- stays); when streaming, the aggregate ORDER BY sends the segment's own buffers before the validation ones.
SELECT ctq.train_step(b.segment, b.bucket, b.rows, b.x, b.y, b.k, {{state}}, {{params}}{{order}}) AS r
FROM {{pack_table}} b
WHERE b.segment IN ({{segment}}, -1) AND {{rows_filter}}

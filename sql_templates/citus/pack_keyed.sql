-- A packing worker's buffers (postgres/pack_select.sql), each with its segment's key; the
-- validation buffers (segment -1) once per segment. {{key_map}} is (segment, dist_key), ...
SELECT km.dist_key, s.segment, s.bucket, s.rows, s.x, s.y, s.k
FROM ({{select}}) s(segment, bucket, rows, x, y, k)
JOIN (VALUES {{key_map}}) km(segment, dist_key) ON km.segment = s.segment OR s.segment = -1

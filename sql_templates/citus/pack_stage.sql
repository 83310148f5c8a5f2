-- Stage 1, on the workers: each row of the distributed source (postgres/pack_rows.sql), tagged with
-- its segment's key (a validation row with every segment's), goes from the worker that holds it to
-- the worker of its segment's shard: Citus runs this INSERT ... SELECT repartitioned, worker to
-- worker. {{key_map}} is (segment, dist_key), ...
INSERT INTO {{stage}} (dist_key, segment, bucket, key, xb, yb)
SELECT km.dist_key, s.segment, s.bucket, s.key, s.xb, s.yb
FROM ({{rows}}) s
JOIN (VALUES {{key_map}}) km(segment, dist_key) ON km.segment = s.segment OR s.segment = -1

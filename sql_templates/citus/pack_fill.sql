-- One packing worker's share of the buffers (pack_keyed.sql) into the pack table: Citus routes each
-- row to its segment's shard.
INSERT INTO {{table}} (dist_key, segment, bucket, rows, x, y, k) {{select}}

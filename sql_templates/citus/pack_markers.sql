-- One empty marker row per segment, in its shard (see common/pack_markers.sql).
INSERT INTO {{table}} (dist_key, segment, bucket, rows, x, y, k)
SELECT km.dist_key, km.segment, -1, 0, ''::bytea, ''::bytea, ''::bytea FROM (VALUES {{key_map}}) km(segment, dist_key)

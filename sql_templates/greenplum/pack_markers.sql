-- One empty marker row per segment, on that segment (see common/pack_markers.sql).
INSERT INTO {{table}} (dist_key, segment, bucket, rows, x, y, k)
SELECT dist_key, seg, -1, 0, ''::bytea, ''::bytea, ''::bytea FROM (VALUES {{key_map}}) km(seg, dist_key);

-- The rows to score, staged in parallel on every segment: each row keeps its own segment (tagged
-- with that segment's distribution key, the redistribution sends it back to where it is), as the
-- bytes packing writes. {{key_map}} is VALUES (segment, dist_key), ...
CREATE TABLE {{stage}} AS
SELECT km.dist_key, {{id}} AS id, {{x_bytes}} AS x, {{y_bytes}} AS y, NULL::bytea AS state, NULL::text AS params
FROM {{source}} t
JOIN (VALUES {{key_map}}) km(seg, dist_key) ON km.seg = t.gp_segment_id
DISTRIBUTED BY (dist_key);

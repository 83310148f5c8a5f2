-- The rows to score, staged in parallel on every segment: each row keeps its own segment (tagged
-- with that segment's distribution key, the redistribution sends it back to where it is), as the
-- bytes packing writes. {{key_map}} is VALUES (segment, dist_key), ... The header rows (parameters)
-- and the state's parts (ctq.stage_state) are added after.
CREATE TABLE {{stage}} AS
SELECT km.dist_key, {{id}} AS id, {{x_bytes}} AS x, {{y_bytes}} AS y, NULL::int AS part, NULL::int8 AS part_offset,
       NULL::bytea AS part_data, NULL::text AS params
FROM {{source}} t
JOIN (VALUES {{key_map}}) km(seg, dist_key) ON km.seg = t.gp_segment_id
DISTRIBUTED BY (dist_key);

-- Stage 1 of packing, in parallel on every segment: each training row keeps its own segment (it
-- is tagged with that segment's key, so the redistribution sends it back to where it is);
-- validation rows are copied to every segment. {{key_map}} is VALUES (segment, dist_key), ...
DROP TABLE IF EXISTS pg_temp.ctq_pack_stage;
CREATE TEMP TABLE ctq_pack_stage AS
SELECT km.dist_key,
       CASE WHEN r.validation THEN -1 ELSE r.seg END AS segment,
       CASE WHEN r.validation THEN ((r.key >> 44) & 1048575) % {{validation_buckets}}
            ELSE ((r.key >> 44) & 1048575) % {{buckets}} END AS bucket,
       r.key, r.xb, r.yb
FROM (SELECT t.gp_segment_id AS seg, {{key}} AS key, abs(({{key}}) % {{modulus}}) < {{cut}} AS validation,
             {{x_bytes}} AS xb, {{y_bytes}} AS yb
      FROM {{source}} t) r
JOIN (VALUES {{key_map}}) km(seg, dist_key) ON km.seg = r.seg OR r.validation
DISTRIBUTED BY (dist_key);

-- The targeted query of segment {{segment}}. The segment is a literal and the GROUP BY names the
-- distribution key and gp_segment_id, so the plan is a direct dispatch to that one segment with
-- no Motion below the aggregate: Gather Motion 1:1 (slice1; segments: 1) -> GroupAggregate.
-- The rows filter and the aggregate ORDER BY: see postgres/train_query.sql. The state arrives as one
-- value (a bind parameter), not as parts.
SELECT ctq.train_step(b.segment, b.bucket, b.rows, b.x, b.y, b.k, NULL::int, NULL::int8, NULL::bytea,
                      {{state}}, {{params}}{{order}}) AS r
FROM {{pack_table}} b
WHERE b.gp_segment_id = {{segment}} AND {{rows_filter}}
GROUP BY b.dist_key, b.gp_segment_id

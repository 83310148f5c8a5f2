-- The targeted scoring query of segment {{segment}} (ctq predict, ctq evaluate) over the rows staged
-- on it (score_stage.sql) and its header row (state and parameters). A literal segment and the
-- GROUP BY of the distribution key and gp_segment_id: direct dispatch, no Motion below the
-- aggregate (as train_query.sql). array_agg and ctq.score_step read the same input, in the same
-- order: the n-th id is the id of the n-th prediction.
SELECT array_agg(b.id) FILTER (WHERE b.state IS NULL) AS ids, ctq.score_step(b.x, b.y, b.state, b.params) AS r
FROM {{stage}} b
WHERE b.gp_segment_id = {{segment}}
GROUP BY b.dist_key, b.gp_segment_id

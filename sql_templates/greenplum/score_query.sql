-- The targeted scoring query of segment {{segment}} (ctq predict, ctq evaluate) over the rows staged
-- on it (score_stage.sql), its header row (the parameters) and the model's state parts copied there
-- (ctq.stage_state). A literal segment and the GROUP BY of the distribution key and gp_segment_id:
-- direct dispatch, no Motion below the aggregate (as ctq.gp_train_query). array_agg and
-- ctq.score_step read the same input, in the same order: the n-th id is the id of the n-th prediction.
SELECT array_agg(b.id) FILTER (WHERE b.params IS NULL AND b.part IS NULL) AS ids,
       ctq.score_step(b.x, b.y, b.part, b.part_offset, b.part_data, b.params) AS r
FROM {{stage}} b
WHERE b.gp_segment_id = {{segment}}
GROUP BY b.dist_key, b.gp_segment_id

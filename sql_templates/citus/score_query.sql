-- The targeted scoring query of segment {{segment}} (ctq predict, ctq evaluate): a router query on
-- its shard of the stage (score_stage.sql: its rows, its header row with the parameters), run whole
-- on that shard's worker, with the parts of the model's state read there by
-- ctq.citus_model_parts from the shard where they lie (worker to worker). $1 run_id, $2 model_id,
-- $3 the key of the state's shard, $4 its hops. array_agg and ctq.score_step read the same input,
-- in the same order: the n-th id is the id of the n-th prediction.
SELECT array_agg(b.id) FILTER (WHERE b.scored) AS ids,
       ctq.score_step(b.x, b.y, b.part, b.part_offset, b.part_data, b.params) AS r
FROM (SELECT false AS scored, NULL::{{id_type}} AS id, NULL::bytea AS x, NULL::bytea AS y, NULL::int AS part,
             NULL::int8 AS part_offset, NULL::bytea AS part_data, h.params
      FROM {{stage}} h WHERE h.dist_key = {{dist_key}} AND h.params IS NOT NULL
      UNION ALL
      SELECT false, NULL, NULL, NULL, p.array_index, p.byte_offset, p.data, NULL
      FROM ctq.citus_model_parts($1, $2, $3, $4) p
      UNION ALL
      SELECT true, s.id, s.x, s.y, NULL, NULL, NULL, NULL
      FROM {{stage}} s WHERE s.dist_key = {{dist_key}} AND s.params IS NULL) b

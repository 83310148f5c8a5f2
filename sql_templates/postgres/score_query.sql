-- The targeted scoring query of virtual segment {{segment}} (ctq predict, ctq evaluate): the rows of
-- the source whose hash falls on it ({{rows_filter}}), each as the bytes packing writes, one header
-- row with the parameters ($3), so that those are not passed again with every row, and the parts
-- of model $2 of run $1's newest stored state (state_tables.sql; read under the caller's
-- row-level security). array_agg and ctq.score_step read the same input, in the same order: the
-- n-th id is the id of the n-th prediction.
WITH s AS (SELECT hops, array_index, byte_offset, data FROM ctq.hop_states WHERE run_id = $1 AND model_id = $2
           UNION ALL
           SELECT hops, array_index, byte_offset, data FROM ctq.model_states WHERE run_id = $1 AND model_id = $2)
SELECT array_agg(b.id) FILTER (WHERE b.scored) AS ids,
       ctq.score_step(b.x, b.y, b.part, b.part_offset, b.part_data, b.params) AS r
FROM (SELECT false AS scored, NULL::{{id_type}} AS id, NULL::bytea AS x, NULL::bytea AS y, NULL::int AS part,
             NULL::int8 AS part_offset, NULL::bytea AS part_data, $3::text AS params
      UNION ALL
      SELECT false, NULL, NULL, NULL, s.array_index, s.byte_offset, s.data, NULL FROM s
      WHERE s.hops = (SELECT max(hops) FROM s)
      UNION ALL
      SELECT true, {{id}}, {{x_bytes}}, {{y_bytes}}, NULL, NULL, NULL, NULL FROM {{source}} t WHERE {{rows_filter}}) b

-- The targeted scoring query of virtual segment {{segment}} (ctq predict, ctq evaluate): the rows of
-- the source whose hash falls on it ({{rows_filter}}), each as the bytes packing writes, one header
-- row with the parameters ($3), so that those are not passed again with every row, and the parts
-- of model $2 of run $1's current state (ctq.current_state_parts: as the caller may read it).
-- array_agg and ctq.score_step read the same input, in the same order: the n-th id is the id of
-- the n-th prediction.
SELECT array_agg(b.id) FILTER (WHERE b.scored) AS ids,
       ctq.score_step(b.x, b.y, b.part, b.part_offset, b.part_data, b.params) AS r
FROM (SELECT false AS scored, NULL::{{id_type}} AS id, NULL::bytea AS x, NULL::bytea AS y, NULL::int AS part,
             NULL::int8 AS part_offset, NULL::bytea AS part_data, $3::text AS params
      UNION ALL
      SELECT false, NULL, NULL, NULL, (s.p).array_index, (s.p).byte_offset, (s.p).data, NULL
      FROM (SELECT ctq.current_state_parts($1, $2) AS p) s
      UNION ALL
      SELECT true, {{id}}, {{x_bytes}}, {{y_bytes}}, NULL, NULL, NULL, NULL FROM {{source}} t WHERE {{rows_filter}}) b

-- The targeted scoring query of virtual segment {{segment}} (ctq predict, ctq evaluate): the rows of
-- the source whose hash falls on it ({{rows_filter}}), each as the bytes packing writes, plus one
-- header row with the model's state ($1) and the parameters ($2), so that those are not passed
-- again with every row. array_agg and ctq.score_step read the same input, in the same order: the
-- n-th id is the id of the n-th prediction.
SELECT array_agg(b.id) FILTER (WHERE b.state IS NULL) AS ids, ctq.score_step(b.x, b.y, b.state, b.params) AS r
FROM (SELECT NULL::{{id_type}} AS id, NULL::bytea AS x, NULL::bytea AS y, $1::bytea AS state, $2::text AS params
      UNION ALL
      SELECT {{id}}, {{x_bytes}}, {{y_bytes}}, NULL, NULL FROM {{source}} t WHERE {{rows_filter}}) b

-- warm_start: models $3 of run $1 start from the final state of model $4 of run $2 (see
-- indb.CompiledModel.loader): a copy of its parts (the newest, from either state table), as a
-- checkpoint of 0 hops of theirs.
WITH s AS (SELECT hops, array_index, byte_offset, data FROM ctq.hop_states WHERE run_id = $2 AND model_id = $4
           UNION ALL
           SELECT hops, array_index, byte_offset, data FROM ctq.model_states WHERE run_id = $2 AND model_id = $4)
INSERT INTO ctq.model_states (run_id, model_id, hops, array_index, byte_offset, data)
SELECT $1, m.model_id, 0, s.array_index, s.byte_offset, s.data
FROM unnest($3::int[]) AS m(model_id) CROSS JOIN s
WHERE s.hops = (SELECT max(hops) FROM s);

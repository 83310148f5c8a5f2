-- warm_start: models $3 of run $1 start from the final state of model $4 of run $2 (see
-- indb.CompiledModel.loader): a copy of its parts (ctq.current_state_parts), as a checkpoint of 0
-- hops of theirs. The targets are joined LATERAL to each part, so the parts stream past once
-- (a plain join could keep them all, as the inner side, to rescan).
INSERT INTO ctq.model_states (run_id, model_id, hops, array_index, byte_offset, data)
SELECT $1, m.model_id, 0, (s.p).array_index, (s.p).byte_offset, (s.p).data
FROM (SELECT ctq.current_state_parts($2, $4) AS p) s,
     LATERAL (SELECT t FROM unnest($3::int[]) t WHERE (s.p).hops IS NOT NULL) m(model_id);

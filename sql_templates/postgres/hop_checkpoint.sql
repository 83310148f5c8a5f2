-- hop.sql's store of a checkpoint: the new state's parts (ctq.state_parts) into model_states,
-- replacing the model's previous checkpoint (state_tables.sql). (Every part of the statement sees
-- the tables as they were before it: the DELETE removes only rows that were there before.)
replaced AS (DELETE FROM ctq.model_states WHERE run_id = $1 AND model_id = $2),
inserted AS (INSERT INTO ctq.model_states (run_id, model_id, hops, array_index, byte_offset, data)
             SELECT $1, $2, $6::int + 1, (p.part).array_index, (p.part).byte_offset, (p.part).data
             FROM (SELECT ctq.state_parts((h.r).state_key) AS part FROM h) p
             RETURNING 1),
written AS (SELECT count(*)::int AS parts FROM inserted)

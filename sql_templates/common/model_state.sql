-- A model's stored state as parts (indb.state_parts), header first; none for a model that has not
-- trained. $1 run_id, $2 model_id
SELECT array_index, byte_offset, data FROM ctq.model_states
WHERE run_id = $1 AND model_id = $2 ORDER BY array_index, byte_offset;

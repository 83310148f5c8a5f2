-- A model's stored state as parts, header first: its newest (ctq.model_state_parts, a run the
-- caller may read). $1 run_id, $2 model_id
SELECT array_index, byte_offset, data FROM ctq.model_state_parts($1, $2);

-- A model's current state as parts (indb.state_parts), header first (ctq.current_state_parts);
-- none for a model that has not trained. $1 run_id, $2 model_id
SELECT (s.p).array_index AS array_index, (s.p).byte_offset AS byte_offset, (s.p).data AS data
FROM (SELECT ctq.current_state_parts($1, $2) AS p) s;

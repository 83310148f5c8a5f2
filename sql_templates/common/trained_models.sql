-- The models of run $1 that have a stored state.
SELECT DISTINCT model_id FROM ctq.model_states WHERE run_id = $1;

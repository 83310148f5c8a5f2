-- The models of run $1 that have a stored state: a checkpoint, or a working state (rows of hop_states).
SELECT model_id FROM ctq.model_states WHERE run_id = $1
UNION
SELECT model_id FROM ctq.hop_states WHERE run_id = $1;

-- A checkpoint replaces the model's previous one, in whichever shard it lies (every shard).
DELETE FROM ctq.model_states WHERE run_id = $1 AND model_id = $2 AND hops <= $3

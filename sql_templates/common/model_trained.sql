-- Whether model $2 of run $1 has trained: a recorded hop (each one stored the state after it).
SELECT EXISTS (SELECT 1 FROM ctq.hops WHERE run_id = $1 AND model_id = $2);

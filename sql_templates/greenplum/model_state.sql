SELECT state FROM ctq.models WHERE run_id = $1 AND model_id = $2;

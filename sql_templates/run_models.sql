SELECT model_id, name, status FROM ctq.models WHERE run_id = $1 ORDER BY model_id;

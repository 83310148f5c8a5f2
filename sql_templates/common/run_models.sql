SELECT model_id, name, status, architecture::text AS architecture, hyperparameters::text AS hyperparameters, seed
FROM ctq.models WHERE run_id = $1 ORDER BY model_id;

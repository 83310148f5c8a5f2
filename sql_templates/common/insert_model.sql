-- $1 run_id, $2 model_id, $3 name, $4 architecture, $5 hyperparameters, $6 seed
INSERT INTO ctq.models (run_id, model_id, name, architecture, hyperparameters, seed)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6);

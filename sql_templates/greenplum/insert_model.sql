-- $1 run_id, $2 model_id, $3 name, $4 architecture, $5 hyperparameters, $6 seed (ctq.insert_model: the caller's run)
SELECT ctq.insert_model($1, $2, $3, $4::jsonb, $5::jsonb, $6);

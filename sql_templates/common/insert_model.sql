-- $1 run_id, $2 model_id, $3 name, $4 architecture, $5 hyperparameters, $6 seed
-- (on Greenplum the body of ctq.insert_model, greenplum/row_security.sql, once it has checked the caller)
INSERT INTO {{catalog}}.models (run_id, model_id, name, architecture, hyperparameters, seed)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6);

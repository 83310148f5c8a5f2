-- The run, through ctq.create_run (row_security.sql: run_by is the caller). Parameters as in
-- common/create_run.sql.
SELECT ctq.create_run($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14);

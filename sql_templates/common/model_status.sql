-- $1 run_id, $2 model_id, $3 status, $4 message
-- (on Greenplum the body of ctq.model_status, greenplum/row_security.sql, once it has checked the caller)
UPDATE {{catalog}}.models SET status = $3, message = $4, updated_at = now() WHERE run_id = $1 AND model_id = $2;

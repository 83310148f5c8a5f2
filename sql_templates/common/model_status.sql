-- $1 run_id, $2 model_id, $3 status, $4 message
UPDATE ctq.models SET status = $3, message = $4, updated_at = now() WHERE run_id = $1 AND model_id = $2;

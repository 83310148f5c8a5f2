-- $1 run_id, $2 model_id, $3 status, $4 message (ctq.model_status).
SELECT ctq.model_status($1, $2, $3, $4);

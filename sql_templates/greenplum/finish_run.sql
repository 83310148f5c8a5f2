-- $1 run_id, $2 status, $3 message (ctq.finish_run).
SELECT ctq.finish_run($1, $2, $3);

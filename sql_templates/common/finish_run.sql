-- $1 run_id, $2 status, $3 message.
UPDATE ctq.runs
SET status = $2, finished_at = now(), heartbeat_at = now(), message = $3
WHERE run_id = $1;

-- Reopen a run for a new coordinator session.
UPDATE ctq.runs SET status = 'running', finished_at = NULL, heartbeat_at = now(), message = NULL WHERE run_id = $1;

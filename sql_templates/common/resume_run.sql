-- Reopen a run for a new coordinator session.
-- (on Greenplum the body of ctq.resume_run, greenplum/row_security.sql, once it has checked the caller)
UPDATE {{catalog}}.runs SET status = 'running', finished_at = NULL, heartbeat_at = now(), message = NULL WHERE run_id = $1;

-- $1 run_id
-- (on Greenplum the body of ctq.heartbeat, greenplum/row_security.sql, once it has checked the caller)
UPDATE {{catalog}}.runs SET heartbeat_at = now() WHERE run_id = $1;

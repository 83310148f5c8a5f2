UPDATE ctq.runs SET heartbeat_at = now() WHERE run_id = $1;

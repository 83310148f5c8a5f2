SELECT r.run_id, r.name, r.status, r.schedule, r.config_fingerprint, r.source_table, r.pack_id, r.segments,
       r.epochs, r.metric, r.metric_mode, r.seed, r.cores_per_segment, r.started_at, r.finished_at,
       r.heartbeat_at, r.run_by, r.shared_with, ctq.can_change_run(r.run_by) AS may_change,
       {{run_alive}} AS alive,
       (SELECT count(*) FROM ctq.hops h WHERE h.run_id = r.run_id) AS hops,
       extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)::float8 AS wall_seconds
FROM ctq.runs r WHERE r.run_id = $1;

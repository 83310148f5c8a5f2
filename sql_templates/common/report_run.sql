-- One run with its configuration and provenance, for `ctq report` and `ctq compare`. A run whose
-- coordinator is gone while it says 'running' is 'stale', its clock stopped at its last sign of life
-- (run_wall_seconds.sql).
SELECT r.run_id, r.name,
       CASE WHEN r.status = 'running' AND NOT lk.alive THEN 'stale' ELSE r.status END AS status,
       r.schedule, r.engine, r.started_at, r.finished_at, r.heartbeat_at, r.config::text AS config,
       r.config_fingerprint, r.source_table, r.pack_id, r.segments, r.epochs, r.metric, r.metric_mode, r.run_by,
       r.client_host, r.versions::text AS versions, r.message, r.seed, r.cores_per_segment,
       {{run_wall_seconds}} AS wall_seconds,
       (SELECT count(*) FROM ctq.hops h WHERE h.run_id = r.run_id) AS hops
FROM ctq.runs r
CROSS JOIN LATERAL (
    SELECT {{run_alive}} AS alive
) lk
WHERE r.run_id = $1;

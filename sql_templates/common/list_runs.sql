-- Runs, newest first, with their status and wall time as shown (run_status.sql, run_wall_seconds.sql).
SELECT r.run_id, r.name, {{run_status_of_lk}} AS status, r.schedule, r.started_at, r.finished_at, r.heartbeat_at, r.source_table,
       r.segments, r.epochs, r.metric, r.run_by, r.message, lk.alive,
       {{run_wall_seconds}} AS wall_seconds,
       (SELECT count(*) FROM ctq.models m WHERE m.run_id = r.run_id) AS models,
       (SELECT count(*) FROM ctq.hops h WHERE h.run_id = r.run_id) AS hops,
       (SELECT l.name FROM ctq.leaderboard l WHERE l.run_id = r.run_id AND l.rank = 1 AND l.score IS NOT NULL LIMIT 1) AS best_model,
       (SELECT l.score FROM ctq.leaderboard l WHERE l.run_id = r.run_id AND l.rank = 1 LIMIT 1) AS best_score
FROM ctq.runs r
CROSS JOIN LATERAL (
    SELECT {{run_alive}} AS alive
) lk
-- $2: a status (stale = running with its coordinator gone) or NULL; $3: a LIKE pattern on the name or NULL
WHERE ($2::text IS NULL OR {{run_status_of_lk}} = $2)
  AND ($3::text IS NULL OR r.name LIKE $3)
ORDER BY r.run_id DESC
LIMIT $1;

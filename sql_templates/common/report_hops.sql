-- A run's hops in the order they started (the timeline of `ctq report`).
SELECT model_id, epoch, segment, started_at, finished_at, compute_seconds, rows
FROM ctq.hops WHERE run_id = $1 ORDER BY started_at, segment;

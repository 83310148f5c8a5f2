-- Measured hop durations of a run, for `ctq simulate --replay`.
SELECT model_id, segment, extract(epoch FROM finished_at - started_at)::float8 AS seconds, epoch
FROM ctq.hops WHERE run_id = $1;

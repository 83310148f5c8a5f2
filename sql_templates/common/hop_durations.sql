-- Measured hop durations of a run, for `ctq simulate --replay` and the cost-aware MOP rule on a resume.
SELECT model_id, segment, extract(epoch FROM finished_at - started_at)::float8 AS seconds, epoch
FROM ctq.hops WHERE run_id = $1;

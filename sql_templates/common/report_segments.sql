SELECT segment, hops, busy_seconds, compute_seconds, span_seconds, utilization, compute_share
FROM ctq.segment_utilization WHERE run_id = $1 ORDER BY segment;

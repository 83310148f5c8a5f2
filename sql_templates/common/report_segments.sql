SELECT segment, hops, busy_seconds, compute_seconds, span_seconds, utilization
FROM ctq.segment_utilization WHERE run_id = $1 ORDER BY segment;

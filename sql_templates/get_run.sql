SELECT run_id, name, status, schedule, config, config_fingerprint, source_table, pack_id, segments, epochs,
       metric, metric_mode, started_at, finished_at
FROM ctq.runs WHERE run_id = $1;

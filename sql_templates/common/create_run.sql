-- $1 name, $2 schedule, $3 config, $4 config_fingerprint, $5 source_table, $6 pack_id, $7 segments,
-- $8 epochs, $9 metric, $10 metric_mode, $11 client_host, $12 versions, $13 seed, $14 cores_per_segment
INSERT INTO ctq.runs (name, status, schedule, config, config_fingerprint, source_table, pack_id, segments,
                      epochs, metric, metric_mode, client_host, versions, heartbeat_at, seed, cores_per_segment)
VALUES ($1, 'running', $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, now(), $13, $14)
RETURNING run_id;

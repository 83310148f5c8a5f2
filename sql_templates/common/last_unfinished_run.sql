-- The newest run of this configuration that did not succeed (for `ctq train GRID --resume`).
SELECT run_id FROM ctq.runs
WHERE config_fingerprint = $1 AND status <> 'succeeded'
ORDER BY run_id DESC LIMIT 1;

-- The newest run of this configuration and its status (for `ctq train GRID --resume auto`: resumed
-- unless it succeeded).
SELECT run_id, status FROM ctq.runs WHERE config_fingerprint = $1 ORDER BY run_id DESC LIMIT 1;

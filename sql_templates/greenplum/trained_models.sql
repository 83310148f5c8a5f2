-- The models of run $1 that have a stored state (one value in ctq.models.state on Greenplum).
SELECT model_id FROM ctq.models WHERE run_id = $1 AND state IS NOT NULL;

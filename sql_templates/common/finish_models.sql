-- Models still training are closed with their run. $1 run_id, $2 the run's status.
-- (on Greenplum the body of ctq.finish_models, greenplum/row_security.sql, once it has checked the caller)
UPDATE {{catalog}}.models
SET status = CASE WHEN $2 = 'succeeded' THEN 'succeeded' ELSE status END
WHERE run_id = $1 AND status IN ('pending', 'training');

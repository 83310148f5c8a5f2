-- Models still training are closed with their run. $1 run_id, $2 the run's status.
UPDATE ctq.models
SET status = CASE WHEN $2 = 'succeeded' THEN 'succeeded' ELSE status END
WHERE run_id = $1 AND status IN ('pending', 'training');

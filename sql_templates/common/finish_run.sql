-- $1 run_id, $2 status, $3 message. Models still training are closed with the run.
WITH closed AS (
    UPDATE ctq.models
    SET status = CASE WHEN $2 = 'succeeded' THEN 'succeeded' ELSE status END
    WHERE run_id = $1 AND status IN ('pending', 'training')
    RETURNING 1
)
UPDATE ctq.runs
SET status = $2, finished_at = now(), heartbeat_at = now(), message = $3
WHERE run_id = $1
RETURNING (SELECT count(*) FROM closed);

-- The newest run of this configuration, and whether `ctq train GRID --resume auto` goes on with it:
-- it stopped before its work was done (interrupted; 'running' with its coordinator gone, or alive:
-- the resume is then refused; failed with models still to train, e.g. a server away past the
-- retries). A run that succeeded, or failed only because models failed, is done.
SELECT r.run_id,
       r.status IN ('running', 'interrupted')
       OR (r.status = 'failed' AND EXISTS (SELECT 1 FROM ctq.models m WHERE m.run_id = r.run_id
                                                                        AND m.status IN ('pending', 'training')))
           AS unfinished
FROM ctq.runs r WHERE r.config_fingerprint = $1 ORDER BY r.run_id DESC LIMIT 1;

-- A hop as the catalog recorded it, or no row. Asked before a hop is retried: a hop whose commit
-- went through but whose reply was lost (the connection dropped after COMMIT) is done, and training
-- it again would start from the state it already advanced (and its record would hit the hops key).
-- The validation metrics are the epoch's, recorded by the epoch's last hop.
-- $1 run, $2 model, $3 epoch, $4 segment
SELECT h.loss, h.metric, h.rows, h.compute_seconds, e.val_loss, e.val_metric,
       extract(epoch FROM h.finished_at - h.started_at)::float8 AS wall_seconds
FROM ctq.hops h
LEFT JOIN ctq.epochs e ON e.run_id = h.run_id AND e.model_id = h.model_id AND e.epoch = h.epoch
WHERE h.run_id = $1 AND h.model_id = $2 AND h.epoch = $3 AND h.segment = $4;

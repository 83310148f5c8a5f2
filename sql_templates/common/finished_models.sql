-- A run's finished models (succeeded or failed) in the order they finished, with their final metrics
-- (a resumed TPE search tells them again in that order).
SELECT model_id, status, hyperparameters::text AS hyperparameters, architecture::text AS architecture,
       train_loss, train_metric, val_loss, val_metric
FROM ctq.models WHERE run_id = $1 AND status IN ('succeeded', 'failed') ORDER BY updated_at, model_id;

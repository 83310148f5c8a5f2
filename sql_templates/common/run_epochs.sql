-- A run's completed epochs in the order they finished, with their metrics (search decisions read them).
SELECT model_id, epoch, train_loss, train_metric, val_loss, val_metric FROM ctq.epochs WHERE run_id = $1
ORDER BY finished_at, model_id, epoch;

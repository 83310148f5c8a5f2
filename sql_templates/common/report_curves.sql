SELECT model_id, epoch, train_loss, train_metric, val_loss, val_metric
FROM ctq.learning_curves WHERE run_id = $1 ORDER BY model_id, epoch;

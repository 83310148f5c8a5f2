-- One model's metrics after one epoch (0-based). $1 run, $2 model, $3 epoch.
SELECT train_loss, train_metric, val_loss, val_metric FROM ctq.epochs WHERE run_id = $1 AND model_id = $2 AND epoch = $3;

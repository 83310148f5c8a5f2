SELECT rank, model_id, name, status, epochs_done, hyperparameters, train_loss, train_metric, val_loss, val_metric,
       metric, score
FROM ctq.leaderboard
WHERE run_id = $1
ORDER BY rank, model_id;

-- A run's leaderboard, with each model's message (why it failed, or why the search stopped it). A model
-- still 'training' in a run that no coordinator drives (interrupted, stale, failed) is shown 'interrupted'.
SELECT l.rank, l.model_id, l.name,
       CASE WHEN l.status = 'training' AND {{run_status}} <> 'running' THEN 'interrupted' ELSE l.status END AS status, l.epochs_done, l.hyperparameters, l.train_loss, l.train_metric,
       l.val_loss, l.val_metric, l.metric, l.score, m.message
FROM ctq.leaderboard l
JOIN ctq.models m ON m.run_id = l.run_id AND m.model_id = l.model_id
JOIN ctq.runs r ON r.run_id = l.run_id
WHERE l.run_id = $1
ORDER BY l.rank, l.model_id;

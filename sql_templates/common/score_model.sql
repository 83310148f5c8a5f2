-- A trained model of a run, for ctq predict, evaluate and export.
SELECT m.model_id, m.name, m.status, m.message, m.epochs_done, m.architecture::text AS architecture,
       m.hyperparameters::text AS hyperparameters
FROM ctq.models m WHERE m.run_id = $1 AND m.model_id = $2;

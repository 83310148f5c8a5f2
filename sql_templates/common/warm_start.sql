-- warm_start: models $3 of run $1 start from the final state of model $4 of run $2 (see indb.start_state).
UPDATE ctq.models SET state = (SELECT s.state FROM ctq.models s WHERE s.run_id = $2 AND s.model_id = $4)
WHERE run_id = $1 AND model_id = ANY($3::int[]);

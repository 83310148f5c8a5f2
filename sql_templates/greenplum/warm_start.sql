-- warm_start: models $3 of run $1 start from the final state of model $4 of run $2 (ctq.warm_start).
SELECT ctq.warm_start($1, $2, $3::int[], $4);

-- Models still training are closed with their run. $1 run_id, $2 the run's status (ctq.finish_models).
SELECT ctq.finish_models($1, $2);

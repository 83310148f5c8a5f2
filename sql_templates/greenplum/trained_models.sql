-- The models of run $1 that have a stored state: those with a recorded hop (a state is stored with
-- every hop; the state tables are not the analysts' on Greenplum).
SELECT DISTINCT model_id FROM ctq.hops WHERE run_id = $1;

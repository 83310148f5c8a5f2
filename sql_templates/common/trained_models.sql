-- The models of run $1 that have a stored state: a checkpoint, or the working state after the
-- hops the catalog records (working_states_files.sql).
SELECT model_id FROM ctq.model_states WHERE run_id = $1
UNION
SELECT h.model_id FROM ctq.hops h WHERE h.run_id = $1 GROUP BY h.model_id
HAVING ctq.has_working_state($1, h.model_id, count(*)::int);

-- hop.sql's store of a hop that is not a checkpoint: the model's working state after $6 + 1 hops
-- (working_states_files.sql).
written AS (SELECT ctq.store_working_state((h.r).state_key, $1, $2, $6::int + 1) AS parts FROM h)

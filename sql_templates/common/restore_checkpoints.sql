-- Run $1 (of $2 segments) back to its models' checkpoints where a server crash took their working
-- state (state_functions.sql); one row per model rolled back.
SELECT model_id, epochs, lost_hops FROM ctq.restore_checkpoints($1, $2);

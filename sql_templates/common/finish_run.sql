-- $1 run_id, $2 status, $3 message. A run that succeeded needs no working state any more (every
-- model's final state is a checkpoint: ctq.coordinator.Coordinator._checkpoints): they are dropped.
WITH finished AS (UPDATE ctq.runs SET status = $2, finished_at = now(), heartbeat_at = now(), message = $3
                  WHERE run_id = $1 RETURNING run_id)
SELECT ctq.drop_working_states(f.run_id) FROM finished f WHERE $2 = 'succeeded';

-- $1 run_id, $2 status, $3 message. A model with no hop left needs no working state (its final
-- state is a checkpoint: ctq.coordinator.Coordinator._checkpoints; a failed model's is never
-- read): a run that succeeded drops them all, any other end those of its models that ended
-- (finished, failed, or stopped by the search); the others stay for a resume.
WITH finished AS (UPDATE ctq.runs SET status = $2, finished_at = now(), heartbeat_at = now(), message = $3
                  WHERE run_id = $1 RETURNING run_id)
SELECT ctq.drop_working_states(f.run_id) FROM finished f WHERE $2 = 'succeeded'
UNION ALL
SELECT ctq.drop_working_states(f.run_id, m.model_id) FROM finished f JOIN ctq.models m ON m.run_id = f.run_id
WHERE $2 <> 'succeeded' AND m.status IN ('succeeded', 'failed', 'stopped');

-- One hop on virtual segment {{segment}}, in one statement: the targeted training query starts from
-- the model's current state (its checkpoint's parts: state_parts_rows.sql; or its working state's
-- file, which the final function reads: indb.load_working_state); the store spliced in stores the new state
-- (hop_working.sql: the model's working state, a file; hop_checkpoint.sql: a checkpoint in
-- model_states), handed over by the trained model a part at a time, as CTE `written` (one row:
-- its parts); ctq.record_hop stores the hop row and (last hop of an epoch) the epoch row. The
-- state never leaves the server and never exists as one value; the hop is recorded entirely or
-- not at all (a working state written by a hop that did not commit is never read: its hops are
-- more than the catalog records).
-- $1 run_id, $2 model_id, $3 epoch, $4 last hop of the epoch, $5 parameters (JSON),
-- $6 the hops the model's stored state has trained
WITH h AS MATERIALIZED ({{train_query}}),
     {{store}}
SELECT (h.r).loss, (h.r).metric, (h.r).rows, (h.r).compute_seconds, (h.r).val_loss, (h.r).val_metric,
       (h.r).hop_started, (h.r).hop_finished, (h.r).executed_on,
       ctq.record_hop($1, $2, $3::int, {{segment}}, $4::boolean, h.r, (SELECT parts FROM written)) AS recorded
FROM h;

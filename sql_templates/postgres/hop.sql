-- One hop on virtual segment {{segment}}, in one statement: the targeted training query reads the
-- model's state parts from ctq.model_states (train_query.sql); the parts it read are deleted and
-- the new state's parts, handed over one at a time by ctq.state_parts, inserted; ctq.record_hop
-- stores the hop row and (last hop of an epoch) the epoch row. The state never leaves the server,
-- never exists as one value, and the hop is atomic. (Every part of the statement sees the state as
-- it was before the statement: the DELETE removes only the parts that were read.)
-- $1 run_id, $2 model_id, $3 epoch, $4 last hop of the epoch, $5 parameters (JSON),
-- $6 the hops the new state has trained
WITH h AS MATERIALIZED ({{train_query}}),
     read AS (DELETE FROM ctq.model_states WHERE run_id = $1 AND model_id = $2),
     written AS (INSERT INTO ctq.model_states (run_id, model_id, hops, array_index, byte_offset, data)
                 SELECT $1, $2, $6::int, (p.part).array_index, (p.part).byte_offset, (p.part).data
                 FROM (SELECT ctq.state_parts((h.r).state_key) AS part FROM h) p
                 RETURNING 1)
SELECT (h.r).loss, (h.r).metric, (h.r).rows, (h.r).compute_seconds, (h.r).val_loss, (h.r).val_metric,
       (h.r).hop_started, (h.r).hop_finished, (h.r).executed_on,
       ctq.record_hop($1, $2, $3::int, {{segment}}, $4::boolean, h.r, (SELECT count(*)::int FROM written)) AS recorded
FROM h;

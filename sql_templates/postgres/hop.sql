-- One hop on virtual segment {{segment}}, in one statement: the targeted training query reads the
-- parts of the model's state from either state table (train_query.sql, state_parts_rows.sql); the
-- state it replaces is deleted and the new state's parts, handed over one at a time by
-- ctq.state_parts, inserted into {{target}} (hop_states, or model_states for a checkpoint, which
-- also replaces the model's previous checkpoint: state_tables.sql); ctq.record_hop stores the hop
-- row and (last hop of an epoch) the epoch row. The state never leaves the server, never exists as
-- one value, and the hop is atomic. (Every part of the statement sees the tables as they were
-- before it: the DELETEs remove only rows that were there before.)
-- $1 run_id, $2 model_id, $3 epoch, $4 last hop of the epoch, $5 parameters (JSON),
-- $6 the hops the model's stored state has trained
WITH h AS MATERIALIZED ({{train_query}}),
     working AS (DELETE FROM ctq.hop_states WHERE run_id = $1 AND model_id = $2),
     {{replaced}}
     written AS (INSERT INTO ctq.{{target}} (run_id, model_id, hops, array_index, byte_offset, data)
                 SELECT $1, $2, $6::int + 1, (p.part).array_index, (p.part).byte_offset, (p.part).data
                 FROM (SELECT ctq.state_parts((h.r).state_key) AS part FROM h) p
                 RETURNING 1)
SELECT (h.r).loss, (h.r).metric, (h.r).rows, (h.r).compute_seconds, (h.r).val_loss, (h.r).val_metric,
       (h.r).hop_started, (h.r).hop_finished, (h.r).executed_on,
       ctq.record_hop($1, $2, $3::int, {{segment}}, $4::boolean, h.r, (SELECT count(*)::int FROM written)) AS recorded
FROM h;

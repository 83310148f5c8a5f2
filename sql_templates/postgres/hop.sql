-- One hop on virtual segment {{segment}}, in one statement: the targeted training query reads the
-- model's state from ctq.models and ctq.record_hop stores the new state, the hop row and (last
-- hop of an epoch) the epoch row. The state never leaves the server; the hop is atomic.
-- $1 run_id, $2 model_id, $3 epoch, $4 last hop of the epoch, $5 parameters (JSON)
SELECT (s.r).loss, (s.r).metric, (s.r).rows, (s.r).compute_seconds, (s.r).val_loss, (s.r).val_metric,
       (s.r).hop_started, (s.r).hop_finished, (s.r).executed_on,
       ctq.record_hop($1, $2, $3::int, {{segment}}, $4::boolean, s.r) AS recorded
FROM ({{train_query}}) s;

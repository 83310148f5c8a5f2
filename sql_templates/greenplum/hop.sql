-- Greenplum, step 1 of a hop: the targeted training query on segment {{segment}}. $1 the model's
-- state, $2 the parameters (JSON). Recording follows in record_hop.sql (one statement).
SELECT (s.r).new_state, (s.r).loss, (s.r).metric, (s.r).rows, (s.r).compute_seconds, (s.r).val_loss,
       (s.r).val_metric, (s.r).hop_started, (s.r).hop_finished, (s.r).executed_on
FROM ({{train_query}}) s;

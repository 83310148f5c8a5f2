-- One hop on segment {{segment}}, in one call (hop_functions.sql), in the caller's transaction.
-- $1 run, $2 model, $3 epoch, $4 last hop of the epoch, $5 parameters (JSON), $6 the hops the
-- model's state has trained, $7 each segment's distribution key. {{checkpoint}}: the new state is
-- the model's checkpoint; {{rows}}: cached or stream.
SELECT r.loss, r.metric, r.rows, r.compute_seconds, r.val_loss, r.val_metric, r.hop_started, r.hop_finished,
       r.executed_on
FROM ctq.gp_hop($1, $2, $3::int, {{segment}}, $4::boolean, {{checkpoint}}, $6::int, $5::text, '{{rows}}',
                $7::int[]) r;

-- The hop's record on the coordinator (ctq.record_hop: refused when it ran on another node than
-- segment {{segment}}'s). $1 run_id, $2 model_id, $3 epoch, $4 last hop of the epoch, $5 the hop's
-- ctq.hop_result, $6 the parts its new state was stored in.
SELECT ctq.record_hop($1, $2, $3::int, {{segment}}, $4::boolean, $5::ctq.hop_result, $6::int)

-- Warm-up of segment {{segment}} (common/warmup.sql), run by a function so that it runs in the
-- session's writer process on the segment, as every hop does (hop_functions.sql). $1 the parameters.
SELECT ctq.gp_warmup('{{pack_id}}', {{segment}}, $1::text, '{{rows}}');

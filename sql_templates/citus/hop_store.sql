-- The state the hop just trained (state key $4, ctq.citus_state_parts), written a part at a time into
-- ctq.{{target}} on segment {{segment}}'s shard (key {{dist_key}}). The parts hang off the segment's
-- marker row of the pack, co-located with the target: Citus sends the INSERT ... SELECT whole to
-- the worker, in the transaction (and so the backend) of the training query, whose GD holds the
-- state. $1 run_id, $2 model_id, $3 the hops the state had trained before the hop.
INSERT INTO ctq.{{target}} (dist_key, run_id, model_id, hops, array_index, byte_offset, data)
SELECT p.dist_key, $1, $2, $3::int + 1, (p.part).array_index, (p.part).byte_offset, (p.part).data
FROM (SELECT b.dist_key, ctq.citus_state_parts($4::text) AS part FROM {{pack_table}} b
      WHERE b.dist_key = {{dist_key}} AND b.segment = {{segment}} AND b.bucket = -1) p

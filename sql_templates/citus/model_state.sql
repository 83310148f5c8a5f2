-- A model's current state as parts (indb.state_parts), header first: its newest, from either state
-- table (citus/state_tables.sql); none for a model that has not trained. $1 run_id, $2 model_id
WITH s AS (SELECT hops, array_index, byte_offset, data FROM ctq.hop_states WHERE run_id = $1 AND model_id = $2
           UNION ALL
           SELECT hops, array_index, byte_offset, data FROM ctq.model_states WHERE run_id = $1 AND model_id = $2)
SELECT array_index, byte_offset, data FROM s
WHERE hops = (SELECT max(hops) FROM s)
ORDER BY array_index, byte_offset;

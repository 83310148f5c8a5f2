-- warm_start (common/warm_start.sql) on Citus: the copy of the source model's newest state is put in
-- segment 0's shard, as a checkpoint of 0 hops; the first hop of each new model finds it there by
-- its header part (citus/state_locate.sql) and moves it worker to worker. (This copy, made once
-- when the run is created, is read through the coordinator.)
WITH s AS (SELECT hops, array_index, byte_offset, data FROM ctq.hop_states WHERE run_id = $2 AND model_id = $4
           UNION ALL
           SELECT hops, array_index, byte_offset, data FROM ctq.model_states WHERE run_id = $2 AND model_id = $4)
INSERT INTO ctq.model_states (dist_key, run_id, model_id, hops, array_index, byte_offset, data)
SELECT (SELECT c.dist_key FROM ctq.citus_segments c WHERE c.segment = 0), $1, m.model_id, 0, s.array_index,
       s.byte_offset, s.data
FROM unnest($3::int[]) AS m(model_id) CROSS JOIN s
WHERE s.hops = (SELECT max(hops) FROM s);

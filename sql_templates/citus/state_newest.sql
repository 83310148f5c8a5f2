-- Where model $2 of run $1's newest stored state lies (its shard's key) and its hops, from its
-- header part (the other parts are not read here).
SELECT x.dist_key, x.hops FROM (
    SELECT dist_key, hops FROM ctq.hop_states WHERE run_id = $1 AND model_id = $2 AND array_index < 0
    UNION ALL
    SELECT dist_key, hops FROM ctq.model_states WHERE run_id = $1 AND model_id = $2 AND array_index < 0) x
ORDER BY x.hops DESC LIMIT 1

-- The key of the shard holding model $2 of run $1's state of $3 hops (its header part), if any:
-- a query on every shard, made only when the state is not where its last hop left it.
SELECT x.dist_key FROM (
    SELECT dist_key FROM ctq.hop_states WHERE run_id = $1 AND model_id = $2 AND hops = $3 AND array_index < 0
    UNION ALL
    SELECT dist_key FROM ctq.model_states WHERE run_id = $1 AND model_id = $2 AND hops = $3 AND array_index < 0) x
LIMIT 1

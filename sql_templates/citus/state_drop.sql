-- The working states a hop replaced, in the shard of key $1 (a router DELETE): model $3 of run $2,
-- up to $4 hops.
DELETE FROM ctq.hop_states WHERE dist_key = $1 AND run_id = $2 AND model_id = $3 AND hops <= $4

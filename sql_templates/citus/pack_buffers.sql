-- Stage 2, on the workers: each shard's rows grouped into buffers (the GROUP BY holds the
-- distribution key: every worker aggregates its own shards, co-located with the pack's).
INSERT INTO {{table}} (dist_key, segment, bucket, rows, x, y, k)
SELECT dist_key, segment, bucket, count(*)::int, string_agg(xb, ''::bytea), string_agg(yb, ''::bytea),
       string_agg(int8send(key), ''::bytea)
FROM {{stage}}
GROUP BY dist_key, segment, bucket

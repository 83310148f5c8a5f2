-- Stage 2: the buffers, grouped by the distribution key (co-located: no motion).
INSERT INTO {{table}} (dist_key, segment, bucket, rows, x, y, k)
SELECT dist_key, segment, bucket, count(*)::int, string_agg(xb, ''::bytea), string_agg(yb, ''::bytea),
       string_agg(int8send(key), ''::bytea)
FROM ctq_pack_stage
GROUP BY dist_key, segment, bucket;
DROP TABLE ctq_pack_stage;

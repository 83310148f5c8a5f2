-- The memory check before segment {{segment}}'s warm-up, computed on its shard's worker (a router
-- query on its marker row). The segments a worker holds share its memory: "sharing" NULL, the
-- client counts all the run's segments (the safe side).
SELECT ctq.model_sizes($1::text)::text AS sizes, NULL::int AS sharing
FROM {{pack_table}} b WHERE b.dist_key = {{dist_key}} AND b.segment = {{segment}} AND b.bucket = -1

-- The rows to score (ctq predict, ctq evaluate), staged in shards co-located with the state tables:
-- each row in the shard of its segment (the row's hash, as on PostgreSQL: every row to exactly one
-- segment), as the bytes packing writes; one header row per segment carries its parameters
-- (score_header.sql). A source on the coordinator is read there, in the scoring's snapshot.
CREATE TABLE {{stage}} (
    dist_key int NOT NULL,
    id       {{id_type}},
    x        bytea,
    y        bytea,
    params   text
);
SELECT create_distributed_table('{{stage}}', 'dist_key', colocate_with => 'ctq.model_states');
INSERT INTO {{stage}} (dist_key, id, x, y)
SELECT km.dist_key, {{id}}, {{x_bytes}}, {{y_bytes}}
FROM {{source}} t
JOIN (VALUES {{key_map}}) km(segment, dist_key) ON km.segment = (({{key}}) & 2147483647) % {{segments}};

-- Packing a distributed source on the workers, stage 1's table: the source's rows, each in the
-- shard of its segment (co-located with the pack). Made anew (a packing that died may have left one).
DROP TABLE IF EXISTS {{stage}};
CREATE UNLOGGED TABLE {{stage}} (
    dist_key int NOT NULL,
    segment  int NOT NULL,
    bucket   int NOT NULL,
    key      int8 NOT NULL,
    xb       bytea,
    yb       bytea
);
SELECT create_distributed_table('{{stage}}', 'dist_key', colocate_with => 'ctq.model_states');

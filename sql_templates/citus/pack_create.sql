-- Packed buffers on Citus: distributed by dist_key, co-located with the state tables, so segment
-- k's buffers (and a copy of the validation buffers) live in segment k's shard (ctq.citus_segments).
CREATE TABLE {{table}} (
    dist_key int NOT NULL,
    segment  int NOT NULL,
    bucket   int NOT NULL,
    rows     int NOT NULL,
    x        bytea NOT NULL,
    y        bytea NOT NULL,
    k        bytea NOT NULL
);
ALTER TABLE {{table}} ALTER COLUMN x SET STORAGE EXTERNAL, ALTER COLUMN y SET STORAGE EXTERNAL,
    ALTER COLUMN k SET STORAGE EXTERNAL;
SELECT create_distributed_table('{{table}}', 'dist_key', colocate_with => 'ctq.model_states');

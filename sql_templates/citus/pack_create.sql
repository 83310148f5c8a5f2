-- Packed buffers on Citus: distributed by dist_key, co-located with the state tables, so segment
-- k's buffers (and a copy of the validation buffers) live in segment k's shard (ctq.citus_segments).
CREATE TABLE {{table}} (
    dist_key int NOT NULL,
{{include columns/pack.sql}}
);
{{include columns/pack_storage.sql}}
SELECT create_distributed_table('{{table}}', 'dist_key', colocate_with => 'ctq.model_states');

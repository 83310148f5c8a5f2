-- The models' states on Citus: the same two tables and parts as on PostgreSQL
-- (common/state_tables.sql), each part in one shard: dist_key is the distribution key of a MOP
-- segment (ctq.citus_segments), so a state lies on the worker of the segment that stored it, in the
-- shard co-located with that segment's buffers (every pack is co-located with model_states). A
-- hop's training and storing are router queries on that shard; a hop on another segment first
-- copies the state there, worker to worker (ctq.citus_move_state, hop_functions.sql). No foreign key
-- to ctq.models: Citus refuses one from a distributed table to a table of the coordinator (a run's
-- states are deleted with it by remove_runs). The tables are distributed at the end of the install
-- (hop_functions.sql), after the privileges every engine grants on them.
CREATE TABLE IF NOT EXISTS {{catalog}}.model_states (
    dist_key    int NOT NULL,
{{include columns/state_part.sql}}
    PRIMARY KEY (dist_key, run_id, model_id, hops, array_index, byte_offset)
);
CREATE UNLOGGED TABLE IF NOT EXISTS {{catalog}}.hop_states (LIKE {{catalog}}.model_states INCLUDING ALL);
-- raw floats do not compress: no TOAST compression attempts on them (set before the tables are
-- distributed: Citus does not change a distributed table's column storage)
DO $storage$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = '{{catalog}}.model_states'::regclass) THEN
        ALTER TABLE {{catalog}}.model_states ALTER COLUMN data SET STORAGE EXTERNAL;
        ALTER TABLE {{catalog}}.hop_states ALTER COLUMN data SET STORAGE EXTERNAL;
    END IF;
END
$storage$;

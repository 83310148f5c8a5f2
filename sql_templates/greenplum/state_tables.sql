-- The models' states on Greenplum: parts as on PostgreSQL (common/state_tables.sql), checkpoints in
-- model_states and working states in the unlogged hop_states (not in files: the segment that trains
-- a model next may be on another host; working_states_rows.sql), each part on a segment: dist_key
-- is one of the pack's distribution-key values (MADlib's trick), so a state lies on the segment that stored it. A hop moves it from the
-- segment of the model's last hop to its own, segment to segment (a Redistribute Motion, never
-- through the coordinator or the client), trains on it there and stores the new state there
-- (ctq.gp_hop, hop_functions.sql). The unique key holds dist_key: Greenplum checks uniqueness on
-- each segment. An earlier Greenplum catalog had a model_states without dist_key, which it never
-- used (states were one value in models.state): it is made anew.
DO $states$
BEGIN
    IF to_regclass('{{catalog}}.model_states') IS NOT NULL THEN  -- (nested: the cast below needs the table)
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{{catalog}}.model_states')
                       AND attname = 'dist_key' AND NOT attisdropped) THEN
            DROP TABLE {{catalog}}.model_states;
        END IF;
    END IF;
END
$states$;
CREATE TABLE IF NOT EXISTS {{catalog}}.model_states (
    dist_key    int NOT NULL,
{{include columns/state_part.sql}}
    PRIMARY KEY (dist_key, run_id, model_id, hops, array_index, byte_offset)
) DISTRIBUTED BY (dist_key);
CREATE UNLOGGED TABLE IF NOT EXISTS {{catalog}}.hop_states (LIKE {{catalog}}.model_states INCLUDING ALL)
DISTRIBUTED BY (dist_key);
-- raw floats do not compress: no TOAST compression attempts on them
ALTER TABLE {{catalog}}.model_states ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE {{catalog}}.hop_states ALTER COLUMN data SET STORAGE EXTERNAL;

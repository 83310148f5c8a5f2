-- Upgrades of catalogs made by earlier versions of ctq.
ALTER TABLE ctq.runs ADD COLUMN IF NOT EXISTS seed int NOT NULL DEFAULT 0;
ALTER TABLE ctq.runs ADD COLUMN IF NOT EXISTS cores_per_segment int;
ALTER TABLE ctq.runs ADD COLUMN IF NOT EXISTS engine text NOT NULL DEFAULT 'postgres';
ALTER TABLE ctq.hops ADD COLUMN IF NOT EXISTS executed_on int;
ALTER TABLE ctq.packs ADD COLUMN IF NOT EXISTS source_schema text;
ALTER TABLE ctq.packs ADD COLUMN IF NOT EXISTS source_name text;
ALTER TABLE ctq.packs ADD COLUMN IF NOT EXISTS packed_by text NOT NULL DEFAULT current_user;
ALTER TABLE ctq.runs ADD COLUMN IF NOT EXISTS shared_with text[] NOT NULL DEFAULT '{}';
-- ASHA stops models: status 'stopped' (catalogs from before it allow only the first four)
ALTER TABLE ctq.models DROP CONSTRAINT IF EXISTS models_status_check;
ALTER TABLE ctq.models ADD CONSTRAINT models_status_check
    CHECK (status IN ('pending', 'training', 'succeeded', 'failed', 'stopped'));
-- States stored as one value (ctq.models.state) before parts existed: each becomes one part of
-- the kind indb.LEGACY_PART, which the training query and the client read as a whole flat state.
INSERT INTO ctq.model_states (run_id, model_id, hops, array_index, byte_offset, data)
SELECT m.run_id, m.model_id,
       (SELECT count(*) FROM ctq.hops h WHERE h.run_id = m.run_id AND h.model_id = m.model_id), -2, 0, m.state
FROM ctq.models m WHERE m.state IS NOT NULL;
UPDATE ctq.models SET state = NULL WHERE state IS NOT NULL;
-- Working states were rows of an unlogged table before they were files (working_states.sql): a
-- run an earlier ctq stopped mid-epoch resumes from its models' checkpoints (restore_checkpoints).
DROP TABLE IF EXISTS ctq.hop_states;

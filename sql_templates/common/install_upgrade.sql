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
{{legacy_states}}

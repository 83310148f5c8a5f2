-- Greenplum 6 (PostgreSQL 9.4) has no ADD COLUMN IF NOT EXISTS: columns added since the first
-- Greenplum catalogs are added when missing.
DO $upgrade$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'ctq.packs'::regclass AND attname = 'source_schema'
                   AND NOT attisdropped) THEN
        ALTER TABLE ctq.packs ADD COLUMN source_schema text;
        ALTER TABLE ctq.packs ADD COLUMN source_name text;
        ALTER TABLE ctq.packs ADD COLUMN packed_by text NOT NULL DEFAULT current_user;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'ctq.runs'::regclass AND attname = 'shared_with'
                   AND NOT attisdropped) THEN
        ALTER TABLE ctq.runs ADD COLUMN shared_with text[] NOT NULL DEFAULT '{}';
    END IF;
END
$upgrade$;
-- ASHA stops models: status 'stopped' (catalogs from before it allow only the first four)
ALTER TABLE ctq.models DROP CONSTRAINT IF EXISTS models_status_check;
ALTER TABLE ctq.models ADD CONSTRAINT models_status_check
    CHECK (status IN ('pending', 'training', 'succeeded', 'failed', 'stopped'));

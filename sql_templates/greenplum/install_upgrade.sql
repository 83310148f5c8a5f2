-- Greenplum 6 (PostgreSQL 9.4) has no ADD COLUMN IF NOT EXISTS: columns added since the first
-- Greenplum catalogs are added when missing (the tables are in ctq_catalog: catalog_layout.sql).
DO $upgrade$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'ctq_catalog.packs'::regclass AND attname = 'source_schema'
                   AND NOT attisdropped) THEN
        ALTER TABLE ctq_catalog.packs ADD COLUMN source_schema text;
        ALTER TABLE ctq_catalog.packs ADD COLUMN source_name text;
        ALTER TABLE ctq_catalog.packs ADD COLUMN packed_by text NOT NULL DEFAULT current_user;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'ctq_catalog.runs'::regclass AND attname = 'shared_with'
                   AND NOT attisdropped) THEN
        ALTER TABLE ctq_catalog.runs ADD COLUMN shared_with text[] NOT NULL DEFAULT '{}';
    END IF;
END
$upgrade$;
-- ASHA stops models: status 'stopped' (catalogs from before it allow only the first four)
ALTER TABLE ctq_catalog.models DROP CONSTRAINT IF EXISTS models_status_check;
ALTER TABLE ctq_catalog.models ADD CONSTRAINT models_status_check
    CHECK (status IN ('pending', 'training', 'succeeded', 'failed', 'stopped'));

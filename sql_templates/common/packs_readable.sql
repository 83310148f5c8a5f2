-- Whether ctq is installed with its packs' source columns and the caller may read its packs
-- (packing.reused_profile): a check before ctq is installed reads nothing of it.
SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'ctq' AND c.relname = 'packs' AND a.attname = 'source_name'
                         AND NOT a.attisdropped)
            THEN has_schema_privilege('ctq', 'USAGE') AND has_table_privilege('ctq.packs', 'SELECT')
            ELSE false END;

-- Greenplum 6 (PostgreSQL 9.4) has no row-level security. Instead, the run and pack tables live in
-- schema ctq_catalog, which only the installer (their owner) can use: analysts read them through
-- the same-named views in ctq (catalog_views.sql), which filter on their reader, and change them
-- only through SECURITY DEFINER functions that check the caller (row_security.sql).
CREATE SCHEMA IF NOT EXISTS ctq_catalog;
REVOKE ALL ON SCHEMA ctq_catalog FROM PUBLIC;
-- A catalog installed before this layout has the tables in ctq: move them with their rows (and the
-- run-id sequence, which belongs to ctq.runs) before the CREATE TABLE IF NOT EXISTS below.
DO $layout$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['packs', 'runs', 'models', 'hops', 'epochs', 'decisions'] LOOP
        IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'ctq' AND c.relname = t AND c.relkind = 'r') THEN
            EXECUTE format('ALTER TABLE ctq.%I SET SCHEMA ctq_catalog', t);
        END IF;
    END LOOP;
END
$layout$;

-- What an analyst reads of the catalog (ctq_catalog, catalog_layout.sql): views with the tables'
-- names and columns, so every statement that reads ctq.runs, ctq.models... reads them. A view reads
-- its table with its owner's rights and filters on its reader as the PostgreSQL policies do
-- (postgres/row_security.sql): a run by ctq.can_read_run, its models, hops, epochs and decisions
-- with it, a pack by ctq.can_read_source. security_barrier: the filter runs before any function of
-- the reader's query. Analysts get SELECT only (row_security.sql); administrators may also write
-- through them (they see every row).
-- (a superuser, as the installer is, sees every pack, as PostgreSQL's policies do not apply to it:
-- also those whose source is gone, which `ctq packs gc` must not take for orphaned tables)
CREATE OR REPLACE VIEW ctq.packs WITH (security_barrier = true) AS
SELECT * FROM ctq_catalog.packs p
WHERE ctq.can_read_source(p.source_schema, p.source_name)
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles u WHERE u.rolname = current_user AND u.rolsuper);

CREATE OR REPLACE VIEW ctq.runs WITH (security_barrier = true) AS
SELECT * FROM ctq_catalog.runs r WHERE ctq.can_read_run(r.run_by, r.shared_with);

-- the rest follows its run: read with it
DO $views$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['models', 'hops', 'epochs', 'decisions'] LOOP
        EXECUTE format('CREATE OR REPLACE VIEW ctq.%1$I WITH (security_barrier = true) AS '
                       'SELECT * FROM ctq_catalog.%1$I x WHERE EXISTS (SELECT 1 FROM ctq_catalog.runs r '
                       'WHERE r.run_id = x.run_id AND ctq.can_read_run(r.run_by, r.shared_with))', t);
    END LOOP;
END
$views$;

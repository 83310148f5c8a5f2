-- Row-level security (PostgreSQL 9.5+): each analyst sees and changes only the runs it started
-- (run_by) and their models, hops and epochs; ctq_admin sees and changes all. A pack row is
-- visible to whoever can SELECT its source now. Superusers and the installer (the tables' owner)
-- are not subject to these policies.
GRANT USAGE, CREATE ON SCHEMA ctq_data TO ctq_user;
GRANT SELECT, INSERT, UPDATE ON ctq.runs, ctq.models TO ctq_user;
GRANT SELECT, INSERT ON ctq.hops, ctq.epochs TO ctq_user;
GRANT SELECT, INSERT ON ctq.decisions TO ctq_user;
GRANT SELECT, INSERT ON ctq.packs TO ctq_user;
GRANT USAGE, SELECT ON SEQUENCE ctq.runs_run_id_seq TO ctq_user;

ALTER TABLE ctq.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.models ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.hops ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.epochs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.packs ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS own_runs ON ctq.runs;
CREATE POLICY own_runs ON ctq.runs
    USING (run_by = current_user OR pg_has_role(current_user, 'ctq_admin', 'MEMBER'))
    WITH CHECK (run_by = current_user OR pg_has_role(current_user, 'ctq_admin', 'MEMBER'));
-- the rest follows the run: the subquery on ctq.runs is itself filtered by own_runs
DROP POLICY IF EXISTS own_models ON ctq.models;
CREATE POLICY own_models ON ctq.models USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = models.run_id));
DROP POLICY IF EXISTS own_hops ON ctq.hops;
CREATE POLICY own_hops ON ctq.hops USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = hops.run_id));
DROP POLICY IF EXISTS own_epochs ON ctq.epochs;
CREATE POLICY own_epochs ON ctq.epochs USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = epochs.run_id));
DROP POLICY IF EXISTS own_decisions ON ctq.decisions;
CREATE POLICY own_decisions ON ctq.decisions
    USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = decisions.run_id));

DROP POLICY IF EXISTS readable_packs ON ctq.packs;
CREATE POLICY readable_packs ON ctq.packs FOR SELECT USING (ctq.can_read_source(source_schema, source_name));
DROP POLICY IF EXISTS own_packs ON ctq.packs;
CREATE POLICY own_packs ON ctq.packs FOR INSERT
    WITH CHECK (packed_by = current_user AND pack_id ~ '^[0-9a-f]{16}$' AND table_name = 'ctq_data.pack_' || pack_id
                AND ctq.can_read_source(source_schema, source_name));

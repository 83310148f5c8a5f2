-- Row-level security (PostgreSQL 9.5+): each analyst sees and changes only the runs it started
-- (run_by) and their models, hops and epochs; ctq_admin sees and changes all. A pack row is
-- visible to whoever can SELECT its source now. Superusers and the installer (the tables' owner)
-- are not subject to these policies.
GRANT USAGE, CREATE ON SCHEMA ctq_data TO ctq_user;
GRANT SELECT, INSERT, UPDATE ON ctq.runs, ctq.models TO ctq_user;
GRANT SELECT, INSERT ON ctq.hops, ctq.epochs TO ctq_user;
GRANT SELECT, INSERT ON ctq.packs TO ctq_user;
GRANT USAGE, SELECT ON SEQUENCE ctq.runs_run_id_seq TO ctq_user;

ALTER TABLE ctq.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.models ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.hops ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.epochs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.packs ENABLE ROW LEVEL SECURITY;

-- Reading follows ctq.can_read_run (owner, administrator, or a role the run is shared with);
-- changing follows ctq.can_change_run (owner or administrator): a shared run is read-only.
DROP POLICY IF EXISTS own_runs ON ctq.runs;
CREATE POLICY own_runs ON ctq.runs
    USING (ctq.can_change_run(run_by)) WITH CHECK (ctq.can_change_run(run_by));
DROP POLICY IF EXISTS shared_runs ON ctq.runs;
CREATE POLICY shared_runs ON ctq.runs FOR SELECT USING (ctq.can_read_run(run_by, shared_with));
-- the rest follows its run
DROP POLICY IF EXISTS own_models ON ctq.models;
CREATE POLICY own_models ON ctq.models
    USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = models.run_id AND ctq.can_change_run(r.run_by)));
DROP POLICY IF EXISTS shared_models ON ctq.models;
CREATE POLICY shared_models ON ctq.models FOR SELECT
    USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = models.run_id));
DROP POLICY IF EXISTS own_hops ON ctq.hops;
CREATE POLICY own_hops ON ctq.hops
    USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = hops.run_id AND ctq.can_change_run(r.run_by)));
DROP POLICY IF EXISTS shared_hops ON ctq.hops;
CREATE POLICY shared_hops ON ctq.hops FOR SELECT
    USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = hops.run_id));
DROP POLICY IF EXISTS own_epochs ON ctq.epochs;
CREATE POLICY own_epochs ON ctq.epochs
    USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = epochs.run_id AND ctq.can_change_run(r.run_by)));
DROP POLICY IF EXISTS shared_epochs ON ctq.epochs;
CREATE POLICY shared_epochs ON ctq.epochs FOR SELECT
    USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = epochs.run_id));

DROP POLICY IF EXISTS readable_packs ON ctq.packs;
CREATE POLICY readable_packs ON ctq.packs FOR SELECT USING (ctq.can_read_source(source_schema, source_name));
DROP POLICY IF EXISTS own_packs ON ctq.packs;
CREATE POLICY own_packs ON ctq.packs FOR INSERT
    WITH CHECK (packed_by = current_user AND pack_id ~ '^[0-9a-f]{16}$' AND table_name = 'ctq_data.pack_' || pack_id
                AND ctq.can_read_source(source_schema, source_name));

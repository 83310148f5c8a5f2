-- Row-level security (PostgreSQL 9.5+): each analyst sees and changes only the runs it started
-- (run_by) and their models, hops and epochs; ctq_admin sees and changes all. A pack row is
-- visible to whoever can SELECT its source now. Superusers and the installer (the tables' owner)
-- are not subject to these policies.
GRANT USAGE, CREATE ON SCHEMA ctq_data TO ctq_user;
GRANT SELECT, INSERT, UPDATE ON ctq.runs, ctq.models TO ctq_user;
GRANT SELECT, INSERT ON ctq.hops, ctq.epochs TO ctq_user;
-- the state tables the engine has (hop_states: where working states are rows, working_state_store.sql)
DO $grants$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ctq.model_states', 'ctq.hop_states'] LOOP
        CONTINUE WHEN to_regclass(t) IS NULL;
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON %s TO ctq_user', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO ctq_admin', t);
    END LOOP;
END
$grants$;
GRANT SELECT, INSERT ON ctq.decisions TO ctq_user;
GRANT SELECT, INSERT ON ctq.packs TO ctq_user;
GRANT USAGE, SELECT ON SEQUENCE ctq.runs_run_id_seq TO ctq_user;

ALTER TABLE ctq.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.models ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.hops ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.epochs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE ctq.packs ENABLE ROW LEVEL SECURITY;

-- Reading follows ctq.can_read_run (owner, administrator, or a role the run is shared with);
-- changing follows ctq.can_change_run (owner or administrator): a shared run is read-only.
DROP POLICY IF EXISTS own_runs ON ctq.runs;
CREATE POLICY own_runs ON ctq.runs
    USING (ctq.can_change_run(run_by)) WITH CHECK (ctq.can_change_run(run_by));
DROP POLICY IF EXISTS shared_runs ON ctq.runs;
CREATE POLICY shared_runs ON ctq.runs FOR SELECT USING (ctq.can_read_run(run_by, shared_with));
-- the rest follows its run: changed with it, read with it; so do the state tables where the
-- engine keeps them on this server (state_policy_tables.sql)
DO $policies$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY {{state_policy_tables}} LOOP
        EXECUTE format('ALTER TABLE ctq.%I ENABLE ROW LEVEL SECURITY', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['models', 'hops', 'epochs', 'decisions'] || {{state_policy_tables}} LOOP
        EXECUTE format('DROP POLICY IF EXISTS own_%1$s ON ctq.%1$I', t);
        EXECUTE format('CREATE POLICY own_%1$s ON ctq.%1$I USING (EXISTS (SELECT 1 FROM ctq.runs r '
                       'WHERE r.run_id = %1$I.run_id AND ctq.can_change_run(r.run_by)))', t);
        EXECUTE format('DROP POLICY IF EXISTS shared_%1$s ON ctq.%1$I', t);
        EXECUTE format('CREATE POLICY shared_%1$s ON ctq.%1$I FOR SELECT '
                       'USING (EXISTS (SELECT 1 FROM ctq.runs r WHERE r.run_id = %1$I.run_id))', t);
    END LOOP;
END
$policies$;

DROP POLICY IF EXISTS readable_packs ON ctq.packs;
CREATE POLICY readable_packs ON ctq.packs FOR SELECT USING (ctq.can_read_source(source_schema, source_name));
DROP POLICY IF EXISTS own_packs ON ctq.packs;
CREATE POLICY own_packs ON ctq.packs FOR INSERT
    WITH CHECK (packed_by = current_user AND pack_id ~ '^[0-9a-f]{16}$' AND table_name = 'ctq_data.pack_' || pack_id
                AND ctq.can_read_source(source_schema, source_name));

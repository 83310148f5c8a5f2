-- Least privilege (PostgreSQL 9.4-compatible: Greenplum 6 runs it too). The installer (a superuser:
-- plpython3u is untrusted) owns every ctq object; two group roles get the use of them:
--   ctq_user   analysts: train, resume, list and inspect their own runs (row_security.sql)
--   ctq_admin  also sees and changes every run; it cannot change the server code either
-- ctq.server_code, ctq.meta (python_path) and the functions are executed as Python by the server's
-- OS user: only their owner, the installer, can change them.
{{roles}}
GRANT ctq_user TO ctq_admin;

REVOKE ALL ON SCHEMA ctq FROM PUBLIC;
REVOKE ALL ON SCHEMA ctq_data FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA ctq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ctq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ctq FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA ctq FROM ctq_user, ctq_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ctq FROM ctq_user, ctq_admin;
GRANT USAGE ON SCHEMA ctq TO ctq_user;
-- the bootstrap of every PL/Python function reads these two as its caller: read-only
GRANT SELECT ON ctq.meta, ctq.server_code TO ctq_user;
-- the views filter on their reader (install.sql, views.sql)
GRANT SELECT ON ctq.leaderboard, ctq.learning_curves, ctq.segment_utilization TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.probe(), ctq.model_sizes(text) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.can_read_run(text, text[]), ctq.can_change_run(text) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.data_cached(text, int) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.train_step_transition(text, int, int, int, bytea, bytea, bytea, int, int8, bytea,
                                                    text) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.train_step_final(text) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.train_step(int, int, int, bytea, bytea, bytea, int, int8, bytea, text) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.state_parts(text), ctq.state_part(text, int) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.record_hop(bigint, int, int, int, boolean, ctq.hop_result, int) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.score_step_transition(text, bytea, bytea, int, int8, bytea, text) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.score_step_final(text) TO ctq_user;
GRANT EXECUTE ON FUNCTION ctq.score_step(bytea, bytea, int, int8, bytea, text) TO ctq_user;
-- ctq.path_status (what the server's OS user finds at a path) stays the installer's.

-- Administrators see every run without row-level security (Greenplum 6 has none): plain grants.
GRANT USAGE, CREATE ON SCHEMA ctq_data TO ctq_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ctq.runs, ctq.models, ctq.hops, ctq.epochs TO ctq_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ctq.decisions TO ctq_admin;
GRANT SELECT, INSERT ON ctq.packs TO ctq_admin;
-- UPDATE too: Greenplum checks UPDATE (not USAGE) when a segment asks for the next run id
GRANT USAGE, SELECT, UPDATE ON SEQUENCE {{catalog}}.runs_run_id_seq TO ctq_admin;

GRANT EXECUTE ON FUNCTION ctq.can_read_source(text, text) TO ctq_user;

-- Reusing a pack that someone else packed: the pack table belongs to whoever packed it, and nobody
-- else can read it. This function (with the installer's rights) grants SELECT on it to the session's
-- role, only if that role can SELECT the pack's source *now*; otherwise it refuses (42501). The pack
-- id is checked against its exact form and the table name is built from it, quoted.
CREATE OR REPLACE FUNCTION ctq.use_pack(p_pack_id text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    src_schema text; src_name text; src oid;
BEGIN
    IF p_pack_id IS NULL OR p_pack_id !~ '^[0-9a-f]{16}$' THEN
        RAISE EXCEPTION 'ctq.use_pack: invalid pack id' USING ERRCODE = '22023';
    END IF;
    SELECT p.source_schema, p.source_name INTO src_schema, src_name FROM {{catalog}}.packs p WHERE p.pack_id = p_pack_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ctq.use_pack: no pack %', p_pack_id USING ERRCODE = '22023';
    END IF;
    SELECT c.oid INTO src FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = src_schema AND c.relname = src_name;
    IF src IS NULL THEN  -- not a privilege the caller lacks: nobody can read it (a user trial's fix named a grant)
        RAISE EXCEPTION 'the source %.% of pack % no longer exists (dropped or renamed)',
            src_schema, src_name, p_pack_id USING ERRCODE = '42P01';
    END IF;
    IF NOT has_table_privilege(session_user, src, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for pack %: role % has no SELECT privilege on its source %.%',
            p_pack_id, session_user, coalesce(src_schema, '?'), coalesce(src_name, '?') USING ERRCODE = '42501';
    END IF;
    SELECT c.oid INTO src FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'ctq_data' AND c.relname = 'pack_' || p_pack_id;
    IF src IS NULL THEN
        RETURN NULL;
    END IF;
    IF has_table_privilege(session_user, src, 'SELECT') THEN  -- its packer, or granted before: no DDL
        RETURN 'ctq_data.pack_' || p_pack_id;
    END IF;
    EXECUTE format('GRANT SELECT ON ctq_data.%I TO %I', 'pack_' || p_pack_id, session_user);
    RETURN 'ctq_data.pack_' || p_pack_id;
END
$fn$;
REVOKE ALL ON FUNCTION ctq.use_pack(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.use_pack(text) TO ctq_user;

-- Whether a pack table has its catalog row, whoever may read that row: `ctq packs` must not call
-- the pack of a source the caller cannot read "orphaned" (row-level security, or the Greenplum
-- view, hides its row). It tells only that a pack id is catalogued: pack tables are in pg_class.
CREATE OR REPLACE FUNCTION ctq.pack_is_catalogued(p_pack_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT EXISTS (SELECT 1 FROM {{catalog}}.packs p WHERE p.pack_id = p_pack_id)
$fn$;
REVOKE ALL ON FUNCTION ctq.pack_is_catalogued(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.pack_is_catalogued(text) TO ctq_user;

-- Greenplum 6 (PostgreSQL 9.4) has no row-level security: the same rules as postgres/row_security.sql,
-- enforced by the layout instead (catalog_layout.sql). The tables are in ctq_catalog, which analysts
-- cannot use; they read the filtering views in ctq (catalog_views.sql) and change their runs only
-- through the SECURITY DEFINER functions below (the write statements of sql_templates/greenplum/
-- call them). Each one checks its caller, builds no SQL from its arguments and pins search_path.
-- Inside them current_user is the installer: the caller is session_user (as in ctq.use_pack).
-- Where a function writes what PostgreSQL's statement writes, its body includes that statement
-- (common/<name>.sql: $1, $2... are the function's parameters in the statement's order).
-- They run on the coordinator (SELECT ctq.f(...) with no FROM), which dispatches their writes.
GRANT USAGE, CREATE ON SCHEMA ctq_data TO ctq_user;
REVOKE ALL ON ALL TABLES IN SCHEMA ctq_catalog FROM PUBLIC, ctq_user, ctq_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ctq_catalog FROM PUBLIC, ctq_user, ctq_admin;
GRANT SELECT ON ctq.runs, ctq.models, ctq.hops, ctq.epochs, ctq.decisions, ctq.packs TO ctq_user;
-- hops are recorded by ctq.gp_hop, which checks the run first (hop_functions.sql)
REVOKE EXECUTE ON FUNCTION ctq.record_hop(bigint, int, int, int, boolean, ctq.hop_result, int) FROM ctq_user;

-- The checks, as the session's role (the rules of ctq.can_change_run, ctq.can_read_run and the
-- policy own_packs). In ctq_catalog: only the functions below call them.
CREATE OR REPLACE FUNCTION ctq_catalog.check_change(p_run bigint) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_run IS NULL OR NOT EXISTS (
            SELECT 1 FROM ctq_catalog.runs r WHERE r.run_id = p_run
            AND (r.run_by = session_user OR pg_has_role(session_user, 'ctq_admin', 'MEMBER'))) THEN
        RAISE EXCEPTION 'permission denied for run %: role % is neither its owner nor in ctq_admin',
            p_run, session_user USING ERRCODE = '42501';
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION ctq_catalog.check_read(p_run bigint) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_run IS NULL OR NOT EXISTS (
            SELECT 1 FROM ctq_catalog.runs r WHERE r.run_id = p_run
            AND (r.run_by = session_user OR pg_has_role(session_user, 'ctq_admin', 'MEMBER')
                 OR EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = ANY (r.shared_with)
                            AND pg_has_role(session_user, g.oid, 'MEMBER')))) THEN
        RAISE EXCEPTION 'permission denied for run %: role % may not read it', p_run, session_user
            USING ERRCODE = '42501';
    END IF;
END
$fn$;

-- Whether the session's role may SELECT a source (a pack is a copy of it: ctq.use_pack's rule).
CREATE OR REPLACE FUNCTION ctq_catalog.check_source(p_schema text, p_name text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE src oid;
BEGIN
    SELECT c.oid INTO src FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = p_name;
    IF src IS NULL OR NOT has_table_privilege(session_user, src, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied: role % has no SELECT privilege on %.%', session_user,
            coalesce(p_schema, '?'), coalesce(p_name, '?') USING ERRCODE = '42501';
    END IF;
END
$fn$;

-- A new run of the caller's (create_run.sql), on a pack whose source it can read.
CREATE OR REPLACE FUNCTION ctq.create_run(p_name text, p_schedule text, p_config jsonb, p_fingerprint text,
                                          p_source_table text, p_pack_id text, p_segments int, p_epochs int,
                                          p_metric text, p_metric_mode text, p_client_host text, p_versions jsonb,
                                          p_seed int, p_cores int) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    src_schema text; src_name text; id bigint;
BEGIN
    SELECT p.source_schema, p.source_name INTO src_schema, src_name FROM ctq_catalog.packs p
    WHERE p.pack_id = p_pack_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ctq.create_run: no pack %', p_pack_id USING ERRCODE = '22023';
    END IF;
    PERFORM ctq_catalog.check_source(src_schema, src_name);
    INSERT INTO ctq_catalog.runs (name, status, schedule, config, config_fingerprint, source_table, pack_id,
                                  segments, epochs, metric, metric_mode, client_host, versions, heartbeat_at,
                                  seed, cores_per_segment, run_by)
    VALUES (p_name, 'running', p_schedule, p_config, p_fingerprint, p_source_table, p_pack_id, p_segments,
            p_epochs, p_metric, p_metric_mode, p_client_host, p_versions, now(), p_seed, p_cores, session_user)
    RETURNING run_id INTO id;
    RETURN id;
END
$fn$;

CREATE OR REPLACE FUNCTION ctq.insert_model(p_run bigint, p_model int, p_name text, p_architecture jsonb,
                                            p_hyperparameters jsonb, p_seed int) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    {{include common/insert_model.sql}}
END
$fn$;

-- warm_start: models p_models of run p_run (the caller's) start from the final state of model
-- p_source_model of run p_source_run (one it may read): a copy of its newest parts, each on the
-- segment where it lies, as a state of 0 hops of theirs (ctq.gp_hop finds it there); a state an
-- earlier ctq kept as one value is copied as such.
CREATE OR REPLACE FUNCTION ctq.warm_start(p_run bigint, p_source_run bigint, p_models int[], p_source_model int)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE s bytea; newest int;
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    PERFORM ctq_catalog.check_read(p_source_run);
    SELECT max(x.hops) INTO newest FROM (
        SELECT hops FROM ctq_catalog.hop_states WHERE run_id = p_source_run AND model_id = p_source_model
        UNION ALL
        SELECT hops FROM ctq_catalog.model_states WHERE run_id = p_source_run AND model_id = p_source_model) x;
    INSERT INTO ctq_catalog.model_states (dist_key, run_id, model_id, hops, array_index, byte_offset, data)
    SELECT x.dist_key, p_run, m.model_id, 0, x.array_index, x.byte_offset, x.data
    FROM unnest(p_models) AS m(model_id) CROSS JOIN (
        SELECT dist_key, array_index, byte_offset, data FROM ctq_catalog.hop_states
        WHERE run_id = p_source_run AND model_id = p_source_model AND hops = newest
        UNION ALL
        SELECT dist_key, array_index, byte_offset, data FROM ctq_catalog.model_states
        WHERE run_id = p_source_run AND model_id = p_source_model AND hops = newest) x;
    SELECT m.state INTO s FROM ctq_catalog.models m WHERE m.run_id = p_source_run AND m.model_id = p_source_model;
    IF s IS NOT NULL THEN
        UPDATE ctq_catalog.models SET state = s WHERE run_id = p_run AND model_id = ANY (p_models);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION ctq.finish_models(p_run bigint, p_status text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    {{include common/finish_models.sql}}
END
$fn$;

-- (A model with no hop left keeps no working state, as common/finish_run.sql says: here a
-- checkpoint's hop deletes the state it started from, so only a failed or stopped model's remain.)
CREATE OR REPLACE FUNCTION ctq.finish_run(p_run bigint, p_status text, p_message text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE m record;
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    UPDATE ctq_catalog.runs SET status = p_status, finished_at = now(), heartbeat_at = now(), message = p_message
    WHERE run_id = p_run;
    FOR m IN SELECT x.model_id FROM ctq_catalog.models x WHERE x.run_id = p_run
             AND x.status IN ('succeeded', 'failed', 'stopped')
             AND EXISTS (SELECT 1 FROM ctq_catalog.hop_states s WHERE s.run_id = p_run AND s.model_id = x.model_id) LOOP
        PERFORM ctq.drop_working_states(p_run, m.model_id);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION ctq.model_status(p_run bigint, p_model int, p_status text, p_message text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    {{include common/model_status.sql}}
END
$fn$;

CREATE OR REPLACE FUNCTION ctq.heartbeat(p_run bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    {{include common/heartbeat.sql}}
END
$fn$;

CREATE OR REPLACE FUNCTION ctq.resume_run(p_run bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    {{include common/resume_run.sql}}
END
$fn$;

CREATE OR REPLACE FUNCTION ctq.record_decision(p_run bigint, p_model int, p_rung int, p_seq int, p_epoch int,
                                               p_metric text, p_value float8, p_decision text, p_reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    {{include common/record_decision.sql}}
END
$fn$;

-- ctq share: add the roles to (or remove them from) the run's readers, each once, in name order.
CREATE OR REPLACE FUNCTION ctq.share_run(p_run bigint, p_roles text[], p_revoke boolean) RETURNS text[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE shared text[];
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    IF p_roles IS NULL OR p_revoke IS NULL THEN
        RAISE EXCEPTION 'ctq.share_run: invalid arguments' USING ERRCODE = '22023';
    END IF;
    UPDATE ctq_catalog.runs r
    SET shared_with = ARRAY(SELECT DISTINCT g FROM unnest(CASE WHEN p_revoke THEN r.shared_with
                                                               ELSE r.shared_with || p_roles END) g
                            WHERE NOT (p_revoke AND g = ANY (p_roles)) ORDER BY g)
    WHERE r.run_id = p_run
    RETURNING r.shared_with INTO shared;
    RETURN shared;
END
$fn$;

-- A pack of the caller's, of a source it can read, in the pack table its id names.
CREATE OR REPLACE FUNCTION ctq.insert_pack(p_pack_id text, p_source_table text, p_fingerprint text,
                                           p_settings jsonb, p_table_name text, p_stats jsonb, p_source_schema text,
                                           p_source_name text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_pack_id IS NULL OR p_pack_id !~ '^[0-9a-f]{16}$' OR p_table_name IS DISTINCT FROM ('ctq_data.pack_' || p_pack_id)
    THEN
        RAISE EXCEPTION 'ctq.insert_pack: invalid pack id or table' USING ERRCODE = '22023';
    END IF;
    PERFORM ctq_catalog.check_source(p_source_schema, p_source_name);
    INSERT INTO ctq_catalog.packs (pack_id, source_table, source_fingerprint, settings, table_name, stats,
                                   source_schema, source_name, packed_by)
    VALUES (p_pack_id, p_source_table, p_fingerprint, p_settings, p_table_name, p_stats, p_source_schema,
            p_source_name, session_user);
END
$fn$;

REVOKE ALL ON FUNCTION ctq.create_run(text, text, jsonb, text, text, text, int, int, text, text, text, jsonb, int, int),
    ctq.insert_model(bigint, int, text, jsonb, jsonb, int), ctq.warm_start(bigint, bigint, int[], int),
    ctq.finish_models(bigint, text), ctq.finish_run(bigint, text, text), ctq.model_status(bigint, int, text, text),
    ctq.heartbeat(bigint), ctq.resume_run(bigint),
    ctq.record_decision(bigint, int, int, int, int, text, float8, text, text), ctq.share_run(bigint, text[], boolean),
    ctq.insert_pack(text, text, text, jsonb, text, jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    ctq.create_run(text, text, jsonb, text, text, text, int, int, text, text, text, jsonb, int, int),
    ctq.insert_model(bigint, int, text, jsonb, jsonb, int), ctq.warm_start(bigint, bigint, int[], int),
    ctq.finish_models(bigint, text), ctq.finish_run(bigint, text, text), ctq.model_status(bigint, int, text, text),
    ctq.heartbeat(bigint), ctq.resume_run(bigint),
    ctq.record_decision(bigint, int, int, int, int, text, float8, text, text), ctq.share_run(bigint, text[], boolean),
    ctq.insert_pack(text, text, text, jsonb, text, jsonb, text, text) TO ctq_user;
REVOKE ALL ON FUNCTION ctq_catalog.check_change(bigint), ctq_catalog.check_read(bigint),
    ctq_catalog.check_source(text, text) FROM PUBLIC;

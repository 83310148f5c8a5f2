-- A model's working state (working_states_files.sql) as rows of the unlogged hop_states, where an
-- engine's next segment may be another host (working_state_store.sql: Greenplum, Citus): the hop
-- statement writes them itself, beside the state it trains on (<engine>/state_tables.sql).
-- ctq.current_state_parts, ctq.restore_checkpoints and `ctq rm` go through these functions.
DROP TYPE IF EXISTS ctq.working_part CASCADE;
CREATE TYPE ctq.working_part AS (hops int, array_index int, byte_offset int8, data bytea);

-- The parts of the model's working state if it is the state after the hops the catalog records,
-- as the caller may read them. (PL/pgSQL: Citus plans no SQL function with parameters.)
CREATE OR REPLACE FUNCTION ctq.working_state_parts(p_run bigint, p_model int) RETURNS SETOF ctq.working_part
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN QUERY SELECT s.hops, s.array_index, s.byte_offset, s.data FROM {{catalog}}.hop_states s
    WHERE s.run_id = p_run AND s.model_id = p_model
      AND s.hops = (SELECT count(*) FROM {{catalog}}.hops h WHERE h.run_id = p_run AND h.model_id = p_model);
END
$fn$;

-- Whether the model's state after p_hops hops is its working state (ctq.restore_checkpoints).
CREATE OR REPLACE FUNCTION ctq.has_working_state(p_run bigint, p_model int, p_hops int) RETURNS boolean
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN EXISTS (SELECT 1 FROM {{catalog}}.hop_states s
                   WHERE s.run_id = p_run AND s.model_id = p_model AND s.hops = p_hops);
END
$fn$;

-- Delete the working states of a run (of one model, or all); returns the parts deleted. With the
-- installer's rights, for the run's owner or an administrator (as ctq.restore_checkpoints).
CREATE OR REPLACE FUNCTION ctq.drop_working_states(p_run bigint, p_model int DEFAULT NULL) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE n int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {{catalog}}.runs r WHERE r.run_id = p_run
                   AND (r.run_by = session_user OR pg_has_role(session_user, 'ctq_admin', 'MEMBER'))) THEN
        RAISE EXCEPTION 'permission denied for run %', p_run USING ERRCODE = '42501';
    END IF;
    DELETE FROM {{catalog}}.hop_states s WHERE s.run_id = p_run AND (p_model IS NULL OR s.model_id = p_model);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

REVOKE ALL ON FUNCTION ctq.working_state_parts(bigint, int), ctq.has_working_state(bigint, int, int),
    ctq.drop_working_states(bigint, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.working_state_parts(bigint, int), ctq.has_working_state(bigint, int, int),
    ctq.drop_working_states(bigint, int) TO ctq_user;

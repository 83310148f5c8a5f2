-- A model's working state: its state after its last hop when that hop was not a checkpoint
-- (state_tables.sql). It is a file in the server's data directory,
-- ctq_states/<database oid>/<run>/<model>.<hops> (ctq/indb.py, "Working states on file": why, the
-- format, and what a crash may take); an engine whose next segment may be on another host keeps it
-- in rows instead (working_state_store.sql, working_states_rows.sql). The readers (model_state.sql,
-- warm_start.sql, score_query.sql: through ctq.current_state_parts) and ctq.restore_checkpoints go
-- through them; a hop's own backend reads the file itself (indb.load_working_state). The functions check what row-level security would: a
-- role reads the working states of the runs it may read and writes or deletes those of the runs
-- it may change. Set-returning functions are called in a SELECT list, where their parts stream
-- one at a time (in FROM the server would collect them all first).
DROP TYPE IF EXISTS ctq.working_part CASCADE;
CREATE TYPE ctq.working_part AS (hops int, array_index int, byte_offset int8, data bytea);

-- The parts of the model's working state if its file holds the state after the hops the catalog
-- records, as the caller sees them; none otherwise.
CREATE OR REPLACE FUNCTION ctq.working_state_parts(p_run bigint, p_model int) RETURNS SETOF ctq.working_part
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.working_state_parts(plpy=plpy, GD=GD, run=p_run, model=p_model)
$fn$;

-- Write the state the hop `key` trained (indb.trained_state_parts) as the model's working state
-- after p_hops hops; returns its parts (hop.sql). Deletes the model's files older than the state
-- the hop started from.
CREATE OR REPLACE FUNCTION ctq.store_working_state(key text, p_run bigint, p_model int, p_hops int) RETURNS int
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.call(plpy, ctq.store_working_state, GD=GD, key=key, run=p_run, model=p_model, hops=p_hops)
$fn$;

-- Whether the model's state after p_hops hops is on file, whole (ctq.restore_checkpoints).
CREATE OR REPLACE FUNCTION ctq.has_working_state(p_run bigint, p_model int, p_hops int) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.has_working_state(plpy=plpy, GD=GD, run=p_run, model=p_model, hops=p_hops)
$fn$;

-- Delete the working-state files of a run (of one model, or all); returns how many.
CREATE OR REPLACE FUNCTION ctq.drop_working_states(p_run bigint, p_model int DEFAULT NULL) RETURNS int
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.drop_working_states(plpy=plpy, GD=GD, run=p_run, model=p_model)
$fn$;

-- ctq install, upgrading a catalog from before working states were files: the working states
-- kept as rows of the unlogged ctq.hop_states become files, then the table goes (an upgrade
-- dropped it: every interrupted run trained again since its checkpoints, a user trial).
CREATE OR REPLACE FUNCTION ctq.adopt_row_working_states() RETURNS int
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.adopt_row_working_states(plpy=plpy, GD=GD)
$fn$;

REVOKE ALL ON FUNCTION ctq.working_state_parts(bigint, int), ctq.store_working_state(text, bigint, int, int),
    ctq.has_working_state(bigint, int, int), ctq.drop_working_states(bigint, int),
    ctq.adopt_row_working_states() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.working_state_parts(bigint, int), ctq.store_working_state(text, bigint, int, int),
    ctq.has_working_state(bigint, int, int), ctq.drop_working_states(bigint, int) TO ctq_user;

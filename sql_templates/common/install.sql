-- ctq catalog and in-database functions. Idempotent: every statement can run again, and a newer
-- ctq upgrades an older catalog in place (install_upgrade.sql, CREATE OR REPLACE).
-- {{distributed_*}} are the engine's distribution clauses (empty on PostgreSQL). On Greenplum the
-- tables that PL/Python reads *on a segment* (meta, server code, packs) are replicated: a function
-- running on a segment may only read replicated tables.
CREATE EXTENSION IF NOT EXISTS plpython3u;
CREATE SCHEMA IF NOT EXISTS ctq;
CREATE SCHEMA IF NOT EXISTS ctq_data;   -- packed training buffers, one table per (source, settings)
-- the run and pack tables are created in the engine's catalog schema (catalog_schema.sql)
{{catalog_layout}}

CREATE TABLE IF NOT EXISTS ctq.meta (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
) {{distributed_replicated}};

-- The server-side Python module (ctq/indb.py), loaded by every PL/Python function below.
CREATE TABLE IF NOT EXISTS ctq.server_code (
    name         text PRIMARY KEY,
    sha          text NOT NULL,
    source       text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
) {{distributed_replicated}};

CREATE TABLE IF NOT EXISTS {{catalog}}.packs (
    pack_id            text PRIMARY KEY,
    source_table       text NOT NULL,
    source_fingerprint text NOT NULL,
    settings           jsonb NOT NULL,
    table_name         text NOT NULL,
    stats              jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    source_schema      text,          -- the source, as the privilege check reads it (security.sql)
    source_name        text,
    packed_by          text NOT NULL DEFAULT current_user
) {{distributed_by_pack}};

CREATE TABLE IF NOT EXISTS {{catalog}}.runs (
    run_id             bigserial PRIMARY KEY,
    name               text NOT NULL,
    status             text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    schedule           text NOT NULL DEFAULT 'mop',
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    heartbeat_at       timestamptz,
    config             jsonb NOT NULL,
    config_fingerprint text NOT NULL,
    source_table       text NOT NULL,
    pack_id            text NOT NULL REFERENCES {{catalog}}.packs,
    segments           int NOT NULL,
    epochs             int NOT NULL,
    metric             text NOT NULL,
    metric_mode        text NOT NULL CHECK (metric_mode IN ('min', 'max')),
    run_by             text NOT NULL DEFAULT current_user,
    client_host        text,
    versions           jsonb,
    message            text,
    seed               int NOT NULL DEFAULT 0,
    cores_per_segment  int,
    engine             text NOT NULL DEFAULT 'postgres',
    shared_with        text[] NOT NULL DEFAULT '{}'   -- roles whose members may read the run (ctq share)
) {{distributed_by_run}};

CREATE TABLE IF NOT EXISTS {{catalog}}.models (
    run_id          bigint NOT NULL REFERENCES {{catalog}}.runs ON DELETE CASCADE,
    model_id        int NOT NULL,
    name            text NOT NULL,
    architecture    jsonb NOT NULL,
    hyperparameters jsonb NOT NULL,
    seed            int NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'training', 'succeeded', 'failed', 'stopped')),
    epochs_done     int NOT NULL DEFAULT 0,
    train_loss      float8,
    train_metric    float8,
    val_loss        float8,
    val_metric      float8,
    message         text,
    state           bytea,            -- checkpoint: weights + optimizer state after the last hop
    updated_at      timestamptz,
    PRIMARY KEY (run_id, model_id)
) {{distributed_by_run}};
-- float32 state does not compress; not trying saves about a millisecond per hop
ALTER TABLE {{catalog}}.models ALTER COLUMN state SET STORAGE EXTERNAL;

{{state_tables}}

-- The audit trail of MOP: one row per completed sub-epoch. The key makes every hop exactly-once;
-- executed_on is the segment that reported running the hop, from inside the training function.
CREATE TABLE IF NOT EXISTS {{catalog}}.hops (
    run_id          bigint NOT NULL,
    model_id        int NOT NULL,
    epoch           int NOT NULL,
    segment         int NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    compute_seconds float8 NOT NULL,
    rows            int NOT NULL,
    loss            float8,
    metric          float8,
    executed_on     int,
    PRIMARY KEY (run_id, model_id, epoch, segment),
    FOREIGN KEY (run_id, model_id) REFERENCES {{catalog}}.models ON DELETE CASCADE
) {{distributed_by_run}};

CREATE TABLE IF NOT EXISTS {{catalog}}.epochs (
    run_id       bigint NOT NULL,
    model_id     int NOT NULL,
    epoch        int NOT NULL,
    train_loss   float8,
    train_metric float8,
    val_loss     float8,
    val_metric   float8,
    finished_at  timestamptz NOT NULL,
    PRIMARY KEY (run_id, model_id, epoch),
    FOREIGN KEY (run_id, model_id) REFERENCES {{catalog}}.models ON DELETE CASCADE
) {{distributed_by_run}};

-- Early-stopping decisions of a search (ASHA, ctq/search.py): one per model and rung, numbered in
-- the order they were made (seq, per run), which a resume replays to rebuild the search's state.
-- value: the run's metric after `epoch` epochs; decision: promote (trains on) or stop (never again).
CREATE TABLE IF NOT EXISTS {{catalog}}.decisions (
    run_id     bigint NOT NULL,
    model_id   int NOT NULL,
    rung       int NOT NULL,
    seq        int NOT NULL,
    epoch      int NOT NULL,
    metric     text NOT NULL,
    value      float8,
    decision   text NOT NULL CHECK (decision IN ('promote', 'stop')),
    reason     text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, model_id, rung),
    FOREIGN KEY (run_id, model_id) REFERENCES {{catalog}}.models ON DELETE CASCADE
) {{distributed_by_run}};

{{upgrade}}
-- A run's engine is the database's, the one this script is installed for. Earlier versions wrote
-- none, so every run read 'postgres' (a user trial's Greenplum runs in ctq compare and report):
-- those runs take the engine their pack recorded.
ALTER TABLE {{catalog}}.runs ALTER COLUMN engine SET DEFAULT '{{engine_name}}';
UPDATE {{catalog}}.runs r SET engine = (p.settings->>'engine') FROM {{catalog}}.packs p
WHERE p.pack_id = r.pack_id AND r.engine <> (p.settings->>'engine');  -- (parenthesised for 9.4's precedence)

-- Who may read a run: its owner, an administrator (ctq_admin), or a member of a role the owner
-- shared it with (`ctq share`). One definition for the row-level security policies
-- (row_security.sql) and the views below, which filter on their reader themselves. A role dropped
-- after the run was shared simply matches nobody.
CREATE OR REPLACE FUNCTION ctq.can_read_run(p_run_by text, p_shared_with text[]) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
SELECT p_run_by = current_user OR pg_has_role(current_user, 'ctq_admin', 'MEMBER')
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles g
                  WHERE g.rolname = ANY (p_shared_with) AND pg_has_role(current_user, g.oid, 'MEMBER'))
$fn$;

-- Who may change a run (train, resume, share, delete): its owner or an administrator.
CREATE OR REPLACE FUNCTION ctq.can_change_run(p_run_by text) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
SELECT p_run_by = current_user OR pg_has_role(current_user, 'ctq_admin', 'MEMBER')
$fn$;

-- Whether the caller may SELECT a pack's source (false for a pack recorded without its source).
CREATE OR REPLACE FUNCTION ctq.can_read_source(p_schema text, p_name text) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
SELECT coalesce((SELECT has_table_privilege(c.oid, 'SELECT')
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = p_schema AND c.relname = p_name), false)
$fn$;

-- The leaderboard of every run, ranked by the run's own metric.
-- Ties on the score (common on imbalanced data: several models at the majority share) are broken by
-- the validation loss, then the training loss, so the better-calibrated model ranks first.
CREATE OR REPLACE VIEW ctq.leaderboard AS
SELECT s.*, rank() OVER (PARTITION BY s.run_id
                         ORDER BY CASE WHEN s.metric_mode = 'max' THEN -s.score ELSE s.score END NULLS LAST,
                                  s.val_loss NULLS LAST, s.train_loss NULLS LAST, s.model_id) AS rank
FROM (
    SELECT m.run_id, m.model_id, m.name, m.status, m.epochs_done, m.hyperparameters,
           m.train_loss, m.train_metric, m.val_loss, m.val_metric, r.metric, r.metric_mode,
           CASE WHEN r.metric = 'val_loss' THEN m.val_loss
                WHEN r.metric = 'loss' THEN m.train_loss
                WHEN r.metric LIKE 'val%' THEN m.val_metric  -- val_accuracy, val_auc, val_f1, val_mae...
                ELSE m.train_metric END AS score
    FROM {{catalog}}.models m JOIN {{catalog}}.runs r USING (run_id)
    -- a view reads its tables with its owner's rights (row-level security does not apply to the
    -- installer): the view filters on its reader itself, as the policies do (row_security.sql)
    WHERE ctq.can_read_run(r.run_by, r.shared_with)
) s;

{{catalog_views}}
{{views}}

-- In-database functions. Each PL/Python one starts with the bootstrap (bootstrap.py) that loads
-- ctq.server_code once per backend into GD.
CREATE OR REPLACE FUNCTION ctq.probe() RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
import json
return json.dumps(ctq.call(plpy, ctq.probe))
$fn$;

-- Each model's training state size, counted from shapes, and the server's memory: the client's
-- memory check before a segment's warm-up builds anything (indb.model_sizes).
CREATE OR REPLACE FUNCTION ctq.model_sizes(params text) RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
import json
return json.dumps(ctq.call(plpy, ctq.model_sizes, params=params))
$fn$;

-- What the server's OS user finds at a path: ok, missing, file (not a directory) or unreadable.
-- `ctq install --python-path` checks each directory with it (on every segment on Greenplum).
CREATE OR REPLACE FUNCTION ctq.path_status(path text) RETURNS text
LANGUAGE plpython3u VOLATILE AS $fn$
import os
if not os.path.exists(path):
    return "missing"
if not os.path.isdir(path):
    return "file"
if os.stat(path).st_mode & 0o002:  # anyone could put a module there that the server imports
    return "world-writable"
return "ok" if os.access(path, os.R_OK | os.X_OK) else "unreadable"
$fn$;

-- Functions of earlier versions (training used to read the pack with SPI, which cannot work on a
-- Greenplum segment; packing used to pull the source through one Python process).
DROP FUNCTION IF EXISTS ctq.warmup(int[]);
DROP FUNCTION IF EXISTS ctq.warmup(int[], text, int, text, int, int, text);
DROP FUNCTION IF EXISTS ctq.pack(text, text[], text, text, boolean, float8, int, int, int, text);
DROP FUNCTION IF EXISTS ctq.train_hop(text, int, text, text, text, int, int, int, bytea, boolean, int[]);

-- Whether this backend has (pack, segment)'s decoded data cached: the targeted query then skips
-- the buffer rows and only the segment's marker row reaches the aggregate.
CREATE OR REPLACE FUNCTION ctq.data_cached(pack_id text, segment int) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $fn$
import re
if pack_id is None or segment is None or not re.fullmatch(r"[0-9a-f]{16}", pack_id) or segment < -1:
    plpy.error("ctq.data_cached: invalid arguments")
{{bootstrap}}
return ctq.data_cached(GD, pack_id, segment)
$fn$;

-- The targeted training query: SELECT ctq.train_step(<pack row or state part>, params) FROM <pack>
-- WHERE <segment k> (see train_query.sql). Training happens in the final function, on the segment.
-- (dropping the result type drops the aggregate and record_hop with it: they are created anew)
-- state_key names the trained state for ctq.state_parts, which hands it over as parts (hop.sql),
-- state_parts how many;
-- estimates: the warm-up's estimated hop seconds of each model (JSON), NULL for a hop.
DROP TYPE IF EXISTS ctq.hop_result CASCADE;
CREATE TYPE ctq.hop_result AS (
    estimates bytea, loss float8, metric float8, rows int, compute_seconds float8, val_loss float8,
    val_metric float8, hop_started timestamptz, hop_finished timestamptz, executed_on int, state_key text,
    state_parts int
);

-- The aggregate's rows are the pack's buffer rows and, with NULL buffer columns, the parts of the
-- model's stored state (part, part_offset, part_data: a ctq.model_states row).
DROP FUNCTION IF EXISTS ctq.train_step_transition(text, int, int, int, bytea, bytea, bytea, bytea, text);
DROP FUNCTION IF EXISTS ctq.train_step_transition(text, int, int, int, bytea, bytea, bytea, int, int8, bytea, bytea,
                                                  text) CASCADE;
CREATE OR REPLACE FUNCTION ctq.train_step_transition(acc text, segment int, bucket int, rows int, x bytea,
                                                     y bytea, k bytea, part int, part_offset int8,
                                                     part_data bytea, params text) RETURNS text
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.call(plpy, ctq.step_transition, GD=GD, acc=acc, segment=segment, bucket=bucket, rows=rows, x=x, y=y, k=k,
                part=part, part_offset=part_offset, part_data=part_data, params=params)
$fn$;

CREATE FUNCTION ctq.train_step_final(acc text) RETURNS ctq.hop_result
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
import datetime
r = ctq.call(plpy, ctq.step_final, GD=GD, acc=acc)
utc = datetime.timezone.utc
for key in ("hop_started", "hop_finished"):
    r[key] = datetime.datetime.fromtimestamp(r[key], utc).isoformat()
return r
$fn$;

CREATE AGGREGATE ctq.train_step(int, int, int, bytea, bytea, bytea, int, int8, bytea, text) (
    SFUNC = ctq.train_step_transition, STYPE = text, FINALFUNC = ctq.train_step_final
);

-- The state a hop just trained (its state_key), as parts (array_index, byte_offset, data), made
-- one at a time from the model's variables (indb.trained_state_parts). Called in a SELECT list
-- (value per call): the parts stream into the INSERT that stores them.
DROP TYPE IF EXISTS ctq.state_part CASCADE;
CREATE TYPE ctq.state_part AS (array_index int, byte_offset int8, data bytea);
CREATE FUNCTION ctq.state_parts(key text) RETURNS SETOF ctq.state_part
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.stored_parts(plpy, GD, key)
$fn$;
-- Part number `part` of that state (0 the header, up to state_parts - 1), for the SELECT list of
-- a statement that makes one row per part (FROM generate_series): Greenplum 6 (PostgreSQL 9.4)
-- keeps every value a set-returning function in a SELECT list returns until its last, so the
-- whole state was held a second time in the segment's memory (1 GiB of parts: 1,072 MiB, the
-- same parts one per row: 65 MiB, measured); PostgreSQL 10 and later free each row's.
CREATE FUNCTION ctq.state_part(key text, part int) RETURNS ctq.state_part
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.call(plpy, lambda plpy: ctq.trained_state_part(GD=GD, key=key, number=part))
$fn$;

-- Record one hop: the model's new state, its hop row and (last hop of an epoch) its epoch row, in
-- one statement, so a hop is recorded entirely or not at all. A hop that ran on another segment
-- than the one it was sent to is refused: its result would break MOP's bookkeeping; so is one
-- that stored no state, or not all of it (p_state_parts: the parts the hop statement wrote, where
-- it writes them; r.state_parts: the parts of the state it trained).
DROP FUNCTION IF EXISTS ctq.record_hop(bigint, int, int, int, boolean, ctq.hop_result);
CREATE FUNCTION ctq.record_hop(p_run bigint, p_model int, p_epoch int, p_segment int, p_last boolean,
                               r ctq.hop_result, p_state_parts int DEFAULT NULL) RETURNS int
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    epoch_loss float8; epoch_metric float8;
    -- the hop ends once its state is stored (the hop statement writes the parts before this call):
    -- moving the state is part of a segment's busy time, not of its compute time
    finished timestamptz := greatest(r.hop_finished, clock_timestamp());
BEGIN
    -- runs as its caller: row-level security keeps it to the caller's own runs (security.sql)
    IF p_run IS NULL OR p_model IS NULL OR p_epoch IS NULL OR p_segment IS NULL OR p_last IS NULL OR r IS NULL
       OR p_epoch < 0 OR p_segment < 0 OR r.rows IS NULL OR r.rows < 0 THEN
        RAISE EXCEPTION 'ctq.record_hop: invalid arguments' USING ERRCODE = '22023';
    END IF;
    IF r.executed_on IS DISTINCT FROM p_segment THEN
        RAISE EXCEPTION 'hop of model % sent to segment % ran on segment %', p_model, p_segment, r.executed_on
            USING ERRCODE = 'CTQ02';
    END IF;
    IF coalesce(p_state_parts, 0) < 1 THEN
        RAISE EXCEPTION 'ctq.record_hop: hop of model % stored no state', p_model USING ERRCODE = '22023';
    END IF;
    IF p_state_parts IS DISTINCT FROM r.state_parts THEN  -- a state stored in part would be lost
        RAISE EXCEPTION 'ctq.record_hop: hop of model % stored % of its state''s % parts', p_model, p_state_parts,
            r.state_parts USING ERRCODE = '22023';
    END IF;
    INSERT INTO {{catalog}}.hops (run_id, model_id, epoch, segment, started_at, finished_at, compute_seconds, rows, loss,
                          metric, executed_on)
    VALUES (p_run, p_model, p_epoch, p_segment, r.hop_started, finished, r.compute_seconds, r.rows, r.loss,
            r.metric, r.executed_on);
    IF p_last THEN
        -- (the run as a literal: Greenplum sends a cached generic plan of this aggregate, from a
        -- session's 6th call on, to every segment; the INSERT's values plain variables: it sends
        -- one whose VALUES compute something to every segment; either way, the run's one segment)
        EXECUTE format('SELECT sum(h.loss * h.rows) / nullif(sum(h.rows), 0), '
                       'sum(h.metric * h.rows) / nullif(sum(h.rows), 0) FROM {{catalog}}.hops h '
                       'WHERE h.run_id = %s AND h.model_id = %s AND h.epoch = %s AND h.loss IS NOT NULL',
                       p_run, p_model, p_epoch)
        INTO epoch_loss, epoch_metric;
        INSERT INTO {{catalog}}.epochs (run_id, model_id, epoch, train_loss, train_metric, val_loss, val_metric, finished_at)
        VALUES (p_run, p_model, p_epoch, epoch_loss, epoch_metric, r.val_loss, r.val_metric, finished);
        UPDATE {{catalog}}.models SET status = 'training', updated_at = finished,
               epochs_done = p_epoch + 1, train_loss = epoch_loss,
               train_metric = epoch_metric, val_loss = r.val_loss, val_metric = r.val_metric
        WHERE run_id = p_run AND model_id = p_model;
    ELSE
        UPDATE {{catalog}}.models SET status = 'training', updated_at = finished
        WHERE run_id = p_run AND model_id = p_model;
    END IF;
    RETURN 1;
END
$fn$;

-- Scoring (ctq predict, ctq evaluate): SELECT ctq.score_step(x, y, part, part_offset, part_data, params)
-- over one segment's rows to score, one header row that carries the parameters and the parts of the
-- model's stored state (see score_query.sql and indb.score_final): the state is read where it is
-- stored, a part at a time, never as one value. Like train_step, it runs on the segment.
DROP TYPE IF EXISTS ctq.score_result CASCADE;
CREATE TYPE ctq.score_result AS (
    rows int, prediction float8[], probabilities float8[], loss float8, metric float8, executed_on int,
    metric_state float8[]  -- evaluate, a ranking metric (AUC, F1...): its counts, summed by the client
);

DROP FUNCTION IF EXISTS ctq.score_step_transition(text, bytea, bytea, bytea, text);
CREATE OR REPLACE FUNCTION ctq.score_step_transition(acc text, x bytea, y bytea, part int, part_offset int8,
                                                     part_data bytea, params text)
RETURNS text
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.score_transition(GD=GD, acc=acc, x=x, y=y, part=part, part_offset=part_offset, part_data=part_data,
                            params=params)  # (not ctq.call: see there)
$fn$;

CREATE FUNCTION ctq.score_step_final(acc text) RETURNS ctq.score_result
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.call(plpy, ctq.score_final, GD=GD, acc=acc)
$fn$;

CREATE AGGREGATE ctq.score_step(bytea, bytea, int, int8, bytea, text) (
    SFUNC = ctq.score_step_transition, STYPE = text, FINALFUNC = ctq.score_step_final
);

{{security}}
{{row_security}}
{{working_states}}
{{state_functions}}
{{hop_functions}}
{{include profile_functions.sql}}

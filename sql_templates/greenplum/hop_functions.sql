-- A hop on Greenplum (one call, ctq.gp_hop), in the caller's transaction: the model's state is
-- copied from the segment of its last hop to the hop's segment (segment to segment, into the
-- session's own temporary table), the targeted query trains on it there (a SELECT: the trained
-- state stays in the segment process's GD), the new state's parts are written there from GD, and
-- the hop is recorded. The state never passes through the coordinator or the client. The shared
-- state tables are written only once training is over: Greenplum 6 (without its global deadlock
-- detector) locks a whole table for a DELETE, which would otherwise wait for every other
-- segment's training to end (measured: segments took turns). The statements run from inside
-- these functions: Greenplum runs such a statement in the session's writer process on the
-- segment, for the warm-up as for every hop, so the data and models cached in that process's GD
-- serve them all (a SELECT sent by the client would run in another process).

-- The segment a training or scoring function runs on, from inside (gp_execution_segment(): the
-- primary segment's content id; $1, the targeted segment, is not used), recorded as the hop's
-- executed_on: a hop that ran elsewhere is refused, which proves direct dispatch.
CREATE OR REPLACE FUNCTION ctq.execution_segment(int) RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT gp_execution_segment() $$;
REVOKE ALL ON FUNCTION ctq.execution_segment(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.execution_segment(int) TO ctq_user;

-- The distribution-key value of the pack's rows on segment p_segment (the pack is distributed by
-- one such value per segment): the key that puts a state on that segment.
CREATE OR REPLACE FUNCTION ctq.segment_key(p_pack_id text, p_segment int) RETURNS int
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE k int;
BEGIN
    IF p_pack_id IS NULL OR p_pack_id !~ '^[0-9a-f]{16}$' OR p_segment IS NULL OR p_segment < 0 THEN
        RAISE EXCEPTION 'ctq.segment_key: invalid arguments' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('SELECT dist_key FROM ctq_data.pack_%s WHERE gp_segment_id = %s LIMIT 1', p_pack_id, p_segment)
    INTO k;
    IF k IS NULL THEN
        RAISE EXCEPTION 'pack % has no rows on segment %', p_pack_id, p_segment USING ERRCODE = '22000';
    END IF;
    RETURN k;
END
$fn$;

-- The targeted query of segment p_segment, whose distribution key is p_key: its buffer rows (the
-- segment's own and the validation copies) and, with p_parts, the parts of the model's state there
-- ($2 run, $3 model, $4 the state's hops; $1 the parameters): stored there, or copied there for
-- this hop (the session's pg_temp.ctq_moved_state, ctq_catalog.move_state). The key is a literal and the GROUP BY
-- is the distribution key and gp_segment_id (the planner adds a Redistribute Motion for the key
-- alone), so the plan is a direct dispatch to that one segment with no Motion below the aggregate (Gather Motion 1:1 (slice1; segments: 1) as a SELECT; the hop's INSERT of the new
-- parts runs in the same slice, dispatched to that one segment under ORCA). p_rows: 'cached' (the
-- buffer rows only while the process has not cached them; the marker row stays), 'stream' (every
-- row every time, the state's parts first, then the segment's own buffers before the validation
-- ones, by the aggregate's ORDER BY) or 'markers' (a streaming segment's warm-up reads no data).
-- Literals only from checked arguments: a pack id of its exact form and numbers.
-- (STABLE, not IMMUTABLE: Greenplum 6 folds an IMMUTABLE PL/pgSQL call while planning, and the
-- extended protocol then fails with 'portal "" does not exist'.)
CREATE OR REPLACE FUNCTION ctq.gp_train_query(p_pack_id text, p_segment int, p_key int, p_rows text,
                                              p_parts boolean) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_pack_id IS NULL OR p_pack_id !~ '^[0-9a-f]{16}$' OR p_segment IS NULL OR p_key IS NULL
       OR p_rows IS NULL OR p_rows NOT IN ('cached', 'stream', 'markers') OR p_parts IS NULL THEN
        RAISE EXCEPTION 'ctq.gp_train_query: invalid arguments' USING ERRCODE = '22023';
    END IF;
    RETURN format($q$
SELECT u.dist_key, ctq.train_step(u.segment, u.bucket, u.rows, u.x, u.y, u.k, u.part, u.part_offset, u.part_data,
                                  $1::text%4$s) AS r
FROM (SELECT b.dist_key, b.gp_segment_id, b.segment, b.bucket, b.rows, b.x, b.y, b.k, NULL::int AS part,
             NULL::int8 AS part_offset, NULL::bytea AS part_data
      FROM ctq_data.pack_%1$s b
      WHERE b.dist_key = %2$s AND %3$s%5$s) u
GROUP BY u.dist_key, u.gp_segment_id$q$,
        p_pack_id, p_key,
        CASE p_rows WHEN 'stream' THEN 'TRUE' WHEN 'markers' THEN 'b.bucket < 0'
                    ELSE format('(b.bucket < 0 OR NOT ctq.data_cached(%L, %s))', p_pack_id, p_segment) END,
        CASE WHEN p_rows = 'stream' THEN ' ORDER BY u.segment DESC, u.bucket' ELSE '' END,
        CASE WHEN p_parts THEN format($p$
      UNION ALL
      SELECT s.dist_key, s.gp_segment_id, NULL, NULL, NULL, NULL, NULL, NULL, s.array_index, s.byte_offset, s.data
      FROM ctq_catalog.hop_states s WHERE s.dist_key = %1$s AND s.run_id = $2 AND s.model_id = $3 AND s.hops = $4
      UNION ALL
      SELECT s.dist_key, s.gp_segment_id, NULL, NULL, NULL, NULL, NULL, NULL, s.array_index, s.byte_offset, s.data
      FROM ctq_catalog.model_states s WHERE s.dist_key = %1$s AND s.run_id = $2 AND s.model_id = $3
                                        AND s.hops = $4
      UNION ALL
      SELECT s.dist_key, s.gp_segment_id, NULL, NULL, NULL, NULL, NULL, NULL, s.array_index, s.byte_offset, s.data
      FROM pg_temp.ctq_moved_state s WHERE s.dist_key = %1$s$p$, p_key) ELSE '' END);
END
$fn$;

-- A hop's second statement on segment p_segment (pack p_pack_id, key p_key): the state its training
-- left in the segment process's GD (state key $4, of $5 parts), written a part at a time into
-- ctq_catalog.p_target (hop_states, or model_states for a checkpoint) on that segment. $1 run, $2
-- model, $3 the hops the state had trained before the hop. The parts hang off the segment's
-- marker row of the pack (bucket -1), whose distribution key is the target's: the plan has no
-- Motion, so it runs in the segment's writer process, whose GD holds the state (a Motion would
-- put the function in another process). One row per part (ctq.state_part, not the set-returning
-- ctq.state_parts: see install.sql), made by a subquery kept whole by OFFSET 0, so each part is
-- made once.
CREATE OR REPLACE FUNCTION ctq.gp_store_query(p_target text, p_pack_id text, p_segment int, p_key int)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_target IS NULL OR p_target NOT IN ('hop_states', 'model_states') OR p_pack_id IS NULL
       OR p_pack_id !~ '^[0-9a-f]{16}$' OR p_segment IS NULL OR p_key IS NULL THEN
        RAISE EXCEPTION 'ctq.gp_store_query: invalid arguments' USING ERRCODE = '22023';
    END IF;
    RETURN format('INSERT INTO ctq_catalog.%1$s (dist_key, run_id, model_id, hops, array_index, byte_offset, data) '
                  'SELECT p.dist_key, $1, $2, $3 + 1, (p.part).array_index, (p.part).byte_offset, (p.part).data '
                  'FROM (SELECT b.dist_key, ctq.state_part($4, n.part) AS part FROM ctq_data.pack_%2$s b '
                  'CROSS JOIN generate_series(0, $5 - 1) AS n(part) '
                  'WHERE b.dist_key = %4$s AND b.segment = %3$s AND b.bucket = -1 OFFSET 0) p',
                  p_target, p_pack_id, p_segment, p_key);
END
$fn$;

-- Keras imported in segment p_segment's writer process (ctq.probe there), ahead of its warm-up.
CREATE OR REPLACE FUNCTION ctq.gp_preload(p_segment int) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE ok boolean;
BEGIN
    IF p_segment IS NULL OR p_segment < 0 THEN
        RAISE EXCEPTION 'ctq.gp_preload: invalid arguments' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('SELECT bool_and(ctq.probe() IS NOT NULL) FROM gp_dist_random(''gp_id'') '
                   'WHERE gp_segment_id = %s', p_segment) INTO ok;
    RETURN ok;
END
$fn$;

-- The memory check's sizes (indb.model_sizes) counted in segment p_segment's writer process, where
-- the preload imported Keras and the warm-up builds the models (greenplum/model_sizes.sql): the same
-- SELECT as a statement of its own runs in a reader process that Greenplum starts for it on every
-- segment, which imports Keras again (1.4 s) and keeps it for the session (260 MB), measured.
CREATE OR REPLACE FUNCTION ctq.gp_model_sizes(p_segment int, p_params text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE sizes text;
BEGIN
    IF p_segment IS NULL OR p_segment < 0 THEN
        RAISE EXCEPTION 'ctq.gp_model_sizes: invalid arguments' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('SELECT ctq.model_sizes($1)::text FROM gp_dist_random(''gp_id'') WHERE gp_segment_id = %s',
                   p_segment) INTO sizes USING p_params;
    RETURN sizes;
END
$fn$;

-- Warm-up of segment p_segment's writer process before its first hop (common/warmup.sql): as the
-- caller, who may read the pack (ctq.use_pack). p_rows: 'cached' or 'markers' (a streaming segment).
CREATE OR REPLACE FUNCTION ctq.gp_warmup(p_pack_id text, p_segment int, p_params text, p_rows text) RETURNS bytea
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE estimates bytea;
BEGIN
    EXECUTE 'SELECT (s.r).estimates FROM ('
            || ctq.gp_train_query(p_pack_id, p_segment, ctq.segment_key(p_pack_id, p_segment), p_rows, false)
            || ') s' INTO estimates USING p_params;
    RETURN estimates;
END
$fn$;

-- The parts of a model's state (of p_hops hops) at distribution key p_from, copied to key p_to
-- (segment to segment: a Redistribute Motion, on the segments only) into the session's temporary
-- table pg_temp.ctq_moved_state (emptied at commit), where the hop's training reads them; whether
-- they are at p_from (p_from = p_to: nothing to copy, the training reads them where they are).
CREATE OR REPLACE FUNCTION ctq_catalog.move_state(p_run bigint, p_model int, p_hops int, p_from int, p_to int)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE n int;
BEGIN
    IF p_from = p_to THEN
        EXECUTE format('SELECT count(*)::int FROM (SELECT 1 FROM ctq_catalog.hop_states WHERE dist_key = %1$s '
                       'AND run_id = $1 AND model_id = $2 AND hops = $3 AND array_index < 0 UNION ALL '
                       'SELECT 1 FROM ctq_catalog.model_states WHERE dist_key = %1$s AND run_id = $1 '
                       'AND model_id = $2 AND hops = $3 AND array_index < 0) x', p_from)
        INTO n USING p_run, p_model, p_hops;
        RETURN n > 0;
    END IF;
    EXECUTE format('INSERT INTO pg_temp.ctq_moved_state (dist_key, array_index, byte_offset, data) '
                   'SELECT %1$s, s.array_index, s.byte_offset, s.data '
                   'FROM ctq_catalog.hop_states s WHERE s.dist_key = %2$s AND s.run_id = $1 AND s.model_id = $2 '
                   'AND s.hops = $3 UNION ALL '
                   'SELECT %1$s, s.array_index, s.byte_offset, s.data '
                   'FROM ctq_catalog.model_states s WHERE s.dist_key = %2$s AND s.run_id = $1 AND s.model_id = $2 '
                   'AND s.hops = $3', p_to, p_from)
    USING p_run, p_model, p_hops;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$fn$;
REVOKE ALL ON FUNCTION ctq_catalog.move_state(bigint, int, int, int, int) FROM PUBLIC;

-- One hop of model p_model of the caller's run p_run on segment p_segment (p_hops: the hops its
-- state has trained; p_checkpoint: the new state is its checkpoint, in model_states, else its
-- working state, in hop_states; p_rows 'cached' or 'stream'; p_keys: each segment's distribution
-- key, Engine.segment_keys, in segment order). Returns what ctq.record_hop recorded. A wrong key
-- harms only the caller's run: the hop would run on another segment and be refused (record_hop).
-- Every statement of the hop is planned by the planner (optimizer = off, whatever the session's):
-- ORCA took 10-35 ms to plan each of its small catalog statements (the look-up below 36 ms a hop,
-- the hop's gap to the next one on its segment 94 ms against 22 ms under the planner, measured),
-- sends the training query's UNION ALL of several tables to every segment, and sent record_hop's
-- statements to every segment in about half its calls (issue 23).
DROP FUNCTION IF EXISTS ctq.gp_hop(bigint, int, int, int, boolean, boolean, int, text, text);
CREATE OR REPLACE FUNCTION ctq.gp_hop(p_run bigint, p_model int, p_epoch int, p_segment int, p_last boolean,
                                      p_checkpoint boolean, p_hops int, p_params text, p_rows text,
                                      p_keys int[])
RETURNS ctq.hop_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET optimizer = off AS $fn$
DECLARE
    pack_id text; key int; from_segment int; from_key int; legacy bytea; n int; r ctq.hop_result;
BEGIN
    IF p_model IS NULL OR p_segment IS NULL OR p_segment < 0 OR p_hops IS NULL OR p_hops < 0 OR p_params IS NULL
       OR p_checkpoint IS NULL OR p_rows NOT IN ('cached', 'stream') OR p_keys[p_segment + 1] IS NULL THEN
        RAISE EXCEPTION 'ctq.gp_hop: invalid arguments' USING ERRCODE = '22023';
    END IF;
    -- the run (the caller's: ctq_catalog.check_change's rule), its pack, the model's state as an
    -- earlier ctq kept it (models.state) and the segment of its last hop: one look-up (the three
    -- tables are distributed by run, on one segment)
    SELECT x.pack_id, m.state, (SELECT h.segment FROM ctq_catalog.hops h WHERE h.run_id = p_run
                                AND h.model_id = p_model ORDER BY h.epoch DESC, h.finished_at DESC LIMIT 1)
    INTO pack_id, legacy, from_segment
    FROM ctq_catalog.runs x JOIN ctq_catalog.models m ON m.run_id = x.run_id AND m.model_id = p_model
    WHERE x.run_id = p_run AND (x.run_by = session_user OR pg_has_role(session_user, 'ctq_admin', 'MEMBER'));
    IF NOT FOUND THEN
        PERFORM ctq_catalog.check_change(p_run);  -- (its message, for a run not the caller's)
        RAISE EXCEPTION 'ctq.gp_hop: run % has no model %', p_run, p_model USING ERRCODE = '22023';
    END IF;
    IF to_regclass('pg_temp.ctq_moved_state') IS NULL THEN  -- once a session (the training query reads it)
        CREATE TEMP TABLE ctq_moved_state (dist_key int, array_index int, byte_offset int8, data bytea)
        ON COMMIT DELETE ROWS DISTRIBUTED BY (dist_key);
        ALTER TABLE pg_temp.ctq_moved_state ALTER COLUMN data SET STORAGE EXTERNAL;
    END IF;
    key := p_keys[p_segment + 1];
    -- 1. The state, on this segment: where the model's last hop stored it (after a crash,
    -- restore_checkpoints leaves the hop that stored the checkpoint last); before any hop, a warm
    -- start's copy, or none. A state an earlier ctq kept as one value (models.state) is a part here.
    IF legacy IS NOT NULL THEN
        INSERT INTO pg_temp.ctq_moved_state (dist_key, array_index, byte_offset, data) VALUES (key, -2, 0, legacy);
    ELSE
        IF from_segment IS NOT NULL THEN
            from_key := p_keys[from_segment + 1];
            IF NOT ctq_catalog.move_state(p_run, p_model, p_hops, from_key, key) THEN
                from_key := NULL;  -- not where its last hop left it: looked for below
            END IF;
        END IF;
        IF from_key IS NULL THEN  -- (on every segment: once for a model's first hop)
            SELECT x.dist_key INTO from_key FROM (
                SELECT dist_key FROM ctq_catalog.hop_states
                WHERE run_id = p_run AND model_id = p_model AND hops = p_hops AND array_index < 0
                UNION ALL
                SELECT dist_key FROM ctq_catalog.model_states
                WHERE run_id = p_run AND model_id = p_model AND hops = p_hops AND array_index < 0) x LIMIT 1;
            IF from_key IS NOT NULL THEN
                PERFORM ctq_catalog.move_state(p_run, p_model, p_hops, from_key, key);
            END IF;
        END IF;
    END IF;
    -- 2. Training: a direct-dispatched SELECT; the trained state stays in the segment's GD.
    EXECUTE 'SELECT (t.r).* FROM (' || ctq.gp_train_query(pack_id, p_segment, key, p_rows, true) || ') t'
    INTO r USING p_params, p_run, p_model, p_hops;
    IF r.state_key IS NULL THEN
        RAISE EXCEPTION 'ctq.gp_hop: hop of model % trained no state', p_model USING ERRCODE = '22023';
    END IF;
    -- 3. The new state written on this segment, then the hop recorded, and what it replaced deleted
    -- (the state it started from, wherever it lay; a checkpoint also replaces the last one). The
    -- tables it changes are locked from here to the commit only, all at once and in this order
    -- (Greenplum 6 locks a whole table for a DELETE or UPDATE: two hops taking them one by one
    -- deadlocked, measured, and the one aborted trained again).
    LOCK TABLE ctq_catalog.hop_states, ctq_catalog.model_states, ctq_catalog.models IN EXCLUSIVE MODE;
    EXECUTE ctq.gp_store_query(CASE WHEN p_checkpoint THEN 'model_states' ELSE 'hop_states' END, pack_id, p_segment,
                               key)
    USING p_run, p_model, p_hops, r.state_key, r.state_parts;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM ctq.record_hop(p_run, p_model, p_epoch, p_segment, p_last, r, n);
    IF legacy IS NOT NULL THEN
        UPDATE ctq_catalog.models SET state = NULL WHERE run_id = p_run AND model_id = p_model;
    END IF;
    IF from_key IS NOT NULL THEN
        EXECUTE format('DELETE FROM ctq_catalog.hop_states WHERE dist_key = %s AND run_id = $1 AND model_id = $2 '
                       'AND hops <= $3', from_key)
        USING p_run, p_model, p_hops;
    END IF;
    IF p_checkpoint THEN
        DELETE FROM ctq_catalog.model_states WHERE run_id = p_run AND model_id = p_model AND hops <= p_hops;
    END IF;
    RETURN r;
END
$fn$;
REVOKE ALL ON FUNCTION ctq.segment_key(text, int), ctq.gp_train_query(text, int, int, text, boolean),
    ctq.gp_preload(int), ctq.gp_model_sizes(int, text),
    ctq.gp_store_query(text, text, int, int),
    ctq.gp_warmup(text, int, text, text),
    ctq.gp_hop(bigint, int, int, int, boolean, boolean, int, text, text, int[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.segment_key(text, int), ctq.gp_train_query(text, int, int, text, boolean),
    ctq.gp_preload(int), ctq.gp_model_sizes(int, text),
    ctq.gp_store_query(text, text, int, int),
    ctq.gp_warmup(text, int, text, text),
    ctq.gp_hop(bigint, int, int, int, boolean, boolean, int, text, text, int[]) TO ctq_user;

-- A model's newest stored state as parts, header first (export, scoring: ctq_catalog is not the
-- analysts'), of a run the caller may read.
CREATE OR REPLACE FUNCTION ctq.model_state_parts(p_run bigint, p_model int)
RETURNS TABLE (array_index int, byte_offset int8, data bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM ctq_catalog.check_read(p_run);
    RETURN QUERY
    WITH s AS (SELECT x.hops, x.array_index, x.byte_offset, x.data FROM ctq_catalog.hop_states x
               WHERE x.run_id = p_run AND x.model_id = p_model
               UNION ALL
               SELECT x.hops, x.array_index, x.byte_offset, x.data FROM ctq_catalog.model_states x
               WHERE x.run_id = p_run AND x.model_id = p_model)
    SELECT s.array_index, s.byte_offset, s.data FROM s WHERE s.hops = (SELECT max(hops) FROM s)
    UNION ALL
    SELECT -2, 0::int8, m.state FROM ctq_catalog.models m
    WHERE m.run_id = p_run AND m.model_id = p_model AND m.state IS NOT NULL
    ORDER BY 1, 2;
END
$fn$;
REVOKE ALL ON FUNCTION ctq.model_state_parts(bigint, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.model_state_parts(bigint, int) TO ctq_user;

-- Scoring: the parts of model p_model of run p_run's newest state (a run the caller may read),
-- copied into the caller's scoring stage p_stage (ctq_data.score_<16 hex digits>, score_stage.sql)
-- on every segment whose distribution key is in p_keys, from the segments where they lie: segment
-- to segment. Returns the parts staged.
CREATE OR REPLACE FUNCTION ctq.stage_state(p_run bigint, p_model int, p_stage text, p_keys int[]) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE n int;
BEGIN
    PERFORM ctq_catalog.check_read(p_run);
    IF p_stage IS NULL OR p_stage !~ '^"ctq_data"\."score_[0-9a-f]{16}"$' OR p_keys IS NULL THEN
        RAISE EXCEPTION 'ctq.stage_state: invalid arguments' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('INSERT INTO %s (dist_key, part, part_offset, part_data) '
                   'SELECT k.key, s.array_index, s.byte_offset, s.data FROM unnest($3) AS k(key) CROSS JOIN ('
                   'SELECT x.array_index, x.byte_offset, x.data FROM ctq_catalog.hop_states x '
                   'WHERE x.run_id = $1 AND x.model_id = $2 AND x.hops = (SELECT max(y.hops) FROM ('
                   'SELECT hops FROM ctq_catalog.hop_states WHERE run_id = $1 AND model_id = $2 UNION ALL '
                   'SELECT hops FROM ctq_catalog.model_states WHERE run_id = $1 AND model_id = $2) y) '
                   'UNION ALL '
                   'SELECT x.array_index, x.byte_offset, x.data FROM ctq_catalog.model_states x '
                   'WHERE x.run_id = $1 AND x.model_id = $2 AND x.hops = (SELECT max(y.hops) FROM ('
                   'SELECT hops FROM ctq_catalog.hop_states WHERE run_id = $1 AND model_id = $2 UNION ALL '
                   'SELECT hops FROM ctq_catalog.model_states WHERE run_id = $1 AND model_id = $2) y) '
                   'UNION ALL '
                   'SELECT -2, 0::int8, m.state FROM ctq_catalog.models m '
                   'WHERE m.run_id = $1 AND m.model_id = $2 AND m.state IS NOT NULL) s', p_stage)
    USING p_run, p_model, p_keys;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION ctq.stage_state(bigint, int, text, int[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.stage_state(bigint, int, text, int[]) TO ctq_user;

-- A hop on Greenplum (one call, ctq.gp_hop): the model's state moves from the segment of its last
-- hop to the hop's segment (segment to segment), the targeted query trains on it there and
-- writes the new state's parts there, in the same statement, and the hop is recorded; all in the
-- caller's transaction. The state never passes through the coordinator or the client. The
-- statements run from inside these functions: Greenplum runs such a statement in the session's
-- writer process on the segment, for the warm-up as for every hop, so the data and models cached
-- in that process's GD serve them all (a SELECT sent by the client would run in another process).

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
-- ($2 run, $3 model, $4 the state's hops; $1 the parameters). The key is a literal and the GROUP BY
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
                                        AND s.hops = $4$p$, p_key) ELSE '' END);
END
$fn$;

-- A hop's training statement on segment p_segment (key p_key): the targeted query with the state's
-- parts, as an INSERT of the new state's parts into ctq_catalog.p_target (hop_states or
-- model_states), handed over one at a time by ctq.state_parts, on that segment. $1..$4 as above.
CREATE OR REPLACE FUNCTION ctq.gp_hop_query(p_target text, p_pack_id text, p_segment int, p_key int, p_rows text)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_target IS NULL OR p_target NOT IN ('hop_states', 'model_states') THEN
        RAISE EXCEPTION 'ctq.gp_hop_query: invalid arguments' USING ERRCODE = '22023';
    END IF;
    RETURN format('INSERT INTO ctq_catalog.%s (dist_key, run_id, model_id, hops, array_index, byte_offset, data) '
                  'SELECT p.dist_key, $2, $3, $4 + 1, (p.part).array_index, (p.part).byte_offset, (p.part).data '
                  'FROM (SELECT t.dist_key, ctq.state_parts((t.r).state_key) AS part FROM (%s) t) p',
                  p_target, ctq.gp_train_query(p_pack_id, p_segment, p_key, p_rows, true));
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

-- The parts of a model's state (of p_hops hops) at distribution key p_from, copied to p_to as a working
-- state, segment to segment (a Redistribute Motion, on the segments only); whether they are at
-- p_from (when p_from = p_to nothing moves). Called by ctq.gp_hop, which deletes the source later.
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
    EXECUTE format('INSERT INTO ctq_catalog.hop_states (dist_key, run_id, model_id, hops, array_index, byte_offset, '
                   'data) '
                   'SELECT %1$s, s.run_id, s.model_id, s.hops, s.array_index, s.byte_offset, s.data '
                   'FROM ctq_catalog.hop_states s WHERE s.dist_key = %2$s AND s.run_id = $1 AND s.model_id = $2 '
                   'AND s.hops = $3 UNION ALL '
                   'SELECT %1$s, s.run_id, s.model_id, s.hops, s.array_index, s.byte_offset, s.data '
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
-- working state, in hop_states; p_rows 'cached' or 'stream'). Returns what ctq.record_hop recorded.
CREATE OR REPLACE FUNCTION ctq.gp_hop(p_run bigint, p_model int, p_epoch int, p_segment int, p_last boolean,
                                      p_checkpoint boolean, p_hops int, p_params text, p_rows text)
RETURNS ctq.hop_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    pack_id text; key int; from_segment int; from_key int; legacy bytea; target text; n int; outcome json;
    r ctq.hop_result;
BEGIN
    PERFORM ctq_catalog.check_change(p_run);
    IF p_model IS NULL OR p_segment IS NULL OR p_segment < 0 OR p_hops IS NULL OR p_hops < 0 OR p_params IS NULL
       OR p_checkpoint IS NULL OR p_rows NOT IN ('cached', 'stream') THEN
        RAISE EXCEPTION 'ctq.gp_hop: invalid arguments' USING ERRCODE = '22023';
    END IF;
    SELECT x.pack_id INTO pack_id FROM ctq_catalog.runs x WHERE x.run_id = p_run;
    key := ctq.segment_key(pack_id, p_segment);
    -- Where the model's state lies: where its last hop stored it (after a crash, restore_checkpoints
    -- leaves the hop that stored the checkpoint last); before any hop, a warm start's copy, or none.
    -- A state an earlier ctq kept as one value (models.state) becomes one part here, once.
    SELECT m.state INTO legacy FROM ctq_catalog.models m WHERE m.run_id = p_run AND m.model_id = p_model;
    IF legacy IS NOT NULL THEN
        INSERT INTO ctq_catalog.hop_states (dist_key, run_id, model_id, hops, array_index, byte_offset, data)
        VALUES (key, p_run, p_model, p_hops, -2, 0, legacy);
        UPDATE ctq_catalog.models SET state = NULL WHERE run_id = p_run AND model_id = p_model;
    END IF;
    SELECT h.segment INTO from_segment FROM ctq_catalog.hops h WHERE h.run_id = p_run AND h.model_id = p_model
    ORDER BY h.epoch DESC, h.finished_at DESC LIMIT 1;
    from_key := CASE WHEN legacy IS NOT NULL THEN key
                     WHEN from_segment IS NOT NULL THEN ctq.segment_key(pack_id, from_segment) END;
    IF from_key IS NOT NULL AND NOT ctq_catalog.move_state(p_run, p_model, p_hops, from_key, key) THEN
        from_key := NULL;  -- not where its last hop left it: looked for below
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
    target := CASE WHEN p_checkpoint THEN 'model_states' ELSE 'hop_states' END;
    EXECUTE ctq.gp_hop_query(target, pack_id, p_segment, key, p_rows) USING p_params, p_run, p_model, p_hops;
    GET DIAGNOSTICS n = ROW_COUNT;
    EXECUTE format('SELECT convert_from(data, ''UTF8'')::json -> ''outcome'' FROM ctq_catalog.%s WHERE dist_key = %s '
                   'AND run_id = $1 AND model_id = $2 AND hops = $3 AND array_index = -1', target, key)
    INTO outcome USING p_run, p_model, p_hops + 1;
    IF outcome IS NULL THEN
        RAISE EXCEPTION 'ctq.gp_hop: hop of model % stored no state', p_model USING ERRCODE = '22023';
    END IF;
    r := ROW(NULL, (outcome ->> 'loss')::float8, (outcome ->> 'metric')::float8, (outcome ->> 'rows')::int,
             (outcome ->> 'compute_seconds')::float8, (outcome ->> 'val_loss')::float8,
             (outcome ->> 'val_metric')::float8, to_timestamp((outcome ->> 'hop_started')::float8),
             to_timestamp((outcome ->> 'hop_finished')::float8), (outcome ->> 'executed_on')::int, NULL)::ctq.hop_result;
    PERFORM ctq.record_hop(p_run, p_model, p_epoch, p_segment, p_last, r, n);
    -- the state this hop replaced (and its moved copy); a checkpoint also replaces the last one
    EXECUTE format('DELETE FROM ctq_catalog.hop_states WHERE dist_key IN (%s, %s) AND run_id = $1 AND model_id = $2 '
                   'AND hops <= $3', key, coalesce(from_key, key))
    USING p_run, p_model, p_hops;
    IF p_checkpoint THEN
        DELETE FROM ctq_catalog.model_states WHERE run_id = p_run AND model_id = p_model AND hops <= p_hops;
    END IF;
    RETURN r;
END
$fn$;
REVOKE ALL ON FUNCTION ctq.segment_key(text, int), ctq.gp_train_query(text, int, int, text, boolean),
    ctq.gp_preload(int),
    ctq.gp_hop_query(text, text, int, int, text),
    ctq.gp_warmup(text, int, text, text),
    ctq.gp_hop(bigint, int, int, int, boolean, boolean, int, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.segment_key(text, int), ctq.gp_train_query(text, int, int, text, boolean),
    ctq.gp_preload(int),
    ctq.gp_hop_query(text, text, int, int, text),
    ctq.gp_warmup(text, int, text, text),
    ctq.gp_hop(bigint, int, int, int, boolean, boolean, int, text, text) TO ctq_user;

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

-- Checkpoints of the models' states (state_tables.sql). SECURITY DEFINER with the caller checked
-- (session_user: the owner of the run or an administrator), as ctq.use_pack: an analyst cannot
-- delete hops, and this rollback deletes only where the state really was lost.

-- After a crash that took working states (working_states_files.sql): each model of run p_run whose state after its
-- recorded hops is gone goes back to its checkpoint. A checkpoint is taken at the end of an epoch,
-- so the model keeps its first (checkpoint hops / p_segments) epochs: its later hop and epoch rows
-- are deleted (they are trained again) and its row shows the kept epochs. A model with no
-- checkpoint starts over. Never past a search decision (with a search, every epoch end is a
-- checkpoint: ctq/coordinator.py). Returns each model rolled back: its epochs kept, hops lost.
CREATE OR REPLACE FUNCTION ctq.restore_checkpoints(p_run bigint, p_segments int)
RETURNS TABLE (model_id int, epochs int, lost_hops int)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE m record; kept int; e int; last record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {{catalog}}.runs r WHERE r.run_id = p_run
                   AND (r.run_by = session_user OR pg_has_role(session_user, 'ctq_admin', 'MEMBER'))) THEN
        RAISE EXCEPTION 'permission denied for run %: role % is neither its owner nor in ctq_admin',
            p_run, session_user USING ERRCODE = '42501';
    END IF;
    IF p_segments IS NULL OR p_segments < 1 THEN
        RAISE EXCEPTION 'ctq.restore_checkpoints: invalid arguments' USING ERRCODE = '22023';
    END IF;
    FOR m IN SELECT h.model_id, count(*)::int AS hops FROM {{catalog}}.hops h
             JOIN {{catalog}}.models x ON x.run_id = h.run_id AND x.model_id = h.model_id
             WHERE h.run_id = p_run AND x.status <> 'failed' GROUP BY h.model_id ORDER BY h.model_id LOOP
        CONTINUE WHEN ctq.has_working_state(p_run, m.model_id, m.hops)
                   OR EXISTS (SELECT 1 FROM {{catalog}}.model_states s WHERE s.run_id = p_run
                              AND s.model_id = m.model_id AND s.hops = m.hops);
        kept := coalesce((SELECT max(s.hops) FROM {{catalog}}.model_states s
                          WHERE s.run_id = p_run AND s.model_id = m.model_id), 0);
        IF kept >= m.hops OR kept % p_segments <> 0 THEN
            RAISE EXCEPTION 'model % of run %: its state after % recorded hops is missing, and its checkpoint (% hops) '
                'is not an earlier epoch''s end', m.model_id, p_run, m.hops, kept USING ERRCODE = 'CTQ04';
        END IF;
        e := kept / p_segments;
        IF EXISTS (SELECT 1 FROM {{catalog}}.decisions d WHERE d.run_id = p_run AND d.model_id = m.model_id
                   AND d.epoch > e) THEN
            RAISE EXCEPTION 'model % of run %: its state after epoch % is lost, and a search decision was made on it',
                m.model_id, p_run, e USING ERRCODE = 'CTQ04';
        END IF;
        DELETE FROM {{catalog}}.hops h WHERE h.run_id = p_run AND h.model_id = m.model_id AND h.epoch >= e;
        DELETE FROM {{catalog}}.epochs x WHERE x.run_id = p_run AND x.model_id = m.model_id AND x.epoch >= e;
        PERFORM ctq.drop_working_states(p_run, m.model_id);
        SELECT x.train_loss, x.train_metric, x.val_loss, x.val_metric INTO last FROM {{catalog}}.epochs x
        WHERE x.run_id = p_run AND x.model_id = m.model_id AND x.epoch = e - 1;
        UPDATE {{catalog}}.models x SET epochs_done = e, status = CASE WHEN kept = 0 THEN 'pending' ELSE 'training' END,
               train_loss = last.train_loss, train_metric = last.train_metric, val_loss = last.val_loss,
               val_metric = last.val_metric, updated_at = now()
        WHERE x.run_id = p_run AND x.model_id = m.model_id;
        model_id := m.model_id; epochs := e; lost_hops := m.hops - kept;
        RETURN NEXT;
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION ctq.restore_checkpoints(bigint, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.restore_checkpoints(bigint, int) TO ctq_user;

-- The parts of a model's current state, the state after the hops the catalog records: its working
-- state (working_states_files.sql) or its checkpoint; none where the caller may not read the run, or a
-- crash took the state. The header part comes first. Call it in a SELECT list (its parts then
-- stream: in FROM they would be collected first).
CREATE OR REPLACE FUNCTION ctq.current_state_parts(p_run bigint, p_model int) RETURNS SETOF ctq.working_part
LANGUAGE sql VOLATILE AS $fn$
SELECT (w.p).hops, (w.p).array_index, (w.p).byte_offset, (w.p).data
FROM (SELECT ctq.working_state_parts(p_run, p_model) AS p) w
UNION ALL
(SELECT s.hops, s.array_index, s.byte_offset, s.data FROM {{catalog}}.model_states s
 WHERE s.run_id = p_run AND s.model_id = p_model
   AND s.hops = (SELECT count(*) FROM {{catalog}}.hops h WHERE h.run_id = p_run AND h.model_id = p_model)
 ORDER BY s.array_index, s.byte_offset)
$fn$;
REVOKE ALL ON FUNCTION ctq.current_state_parts(bigint, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.current_state_parts(bigint, int) TO ctq_user;

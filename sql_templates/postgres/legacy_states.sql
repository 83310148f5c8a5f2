-- States stored as one value (ctq.models.state) before parts existed: each becomes one part of
-- the kind indb.LEGACY_PART, which the training query and the client read as a whole flat state.
INSERT INTO ctq.model_states (run_id, model_id, hops, array_index, byte_offset, data)
SELECT m.run_id, m.model_id,
       (SELECT count(*) FROM ctq.hops h WHERE h.run_id = m.run_id AND h.model_id = m.model_id), -2, 0, m.state
FROM ctq.models m WHERE m.state IS NOT NULL;
UPDATE ctq.models SET state = NULL WHERE state IS NOT NULL;
-- (Working states were rows of an unlogged table, ctq.hop_states, before they were files: once the
-- server code is in place, ctq install turns them into files, adopt_working_states.sql.)

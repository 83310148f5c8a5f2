-- A model's training state (weights, optimizer slots, iteration count) as parts (indb.state_parts):
-- one header row (array_index -1: layout and hop count) and each array's raw bytes in pieces of at
-- most 16 MiB, so a state of any size is stored, read and written a piece at a time, never as one
-- value. hops: the hops the state has trained (ctq.hops has as many rows for the model). A model's
-- current state is one of two:
-- * its working state (working_states_files.sql: a file), after a hop that is not a checkpoint. The state
--   is the only heavy write of a run and it is rewritten by every hop: no WAL, no TOAST for it;
-- * its checkpoint, in model_states (logged): written by the last hop of an epoch when the
--   model's previous checkpoint is checkpoint_minutes old, by its last epoch, and by every epoch
--   under a search that decides on epochs (ctq.coordinator.Coordinator._checkpoints). After a
--   crash that took working states, ctq.restore_checkpoints rolls each model that lost its
--   working state back to its checkpoint (its later hops are trained again).
-- (array_index -2: a state written as one value by an earlier ctq, converted on upgrade.)
CREATE TABLE IF NOT EXISTS {{catalog}}.model_states (
{{include columns/state_part.sql}}
    PRIMARY KEY (run_id, model_id, hops, array_index, byte_offset),
    FOREIGN KEY (run_id, model_id) REFERENCES {{catalog}}.models ON DELETE CASCADE
);
-- raw floats do not compress: no TOAST compression attempts on them
ALTER TABLE {{catalog}}.model_states ALTER COLUMN data SET STORAGE EXTERNAL;

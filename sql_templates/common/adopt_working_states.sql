-- After the server code is installed (ctq.catalog.install): working states an earlier ctq kept as
-- rows become this engine's files (working_states_files.sql); returns how many.
SELECT ctq.adopt_row_working_states()

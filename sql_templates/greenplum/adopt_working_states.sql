-- (Working states are rows here, working_states_rows.sql: nothing to adopt.)
SELECT 0

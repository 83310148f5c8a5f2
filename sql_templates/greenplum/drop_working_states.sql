-- What `ctq rm` deletes of runs $1 besides their rows: nothing on Greenplum, whose working states
-- are rows of hop_states (working_states.sql), deleted with the run's other rows.
SELECT 0;

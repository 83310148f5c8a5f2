-- `ctq rm`: the working states of runs $1, before their rows (files, or rows of hop_states:
-- working_state_store.sql).
SELECT ctq.drop_working_states(r) FROM unnest($1::bigint[]) r;

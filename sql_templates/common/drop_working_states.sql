-- What `ctq rm` deletes of runs $1 besides their rows: their working-state files (working_states.sql).
SELECT ctq.drop_working_states(r) FROM unnest($1::bigint[]) r;

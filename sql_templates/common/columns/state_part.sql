-- The columns of a state part (state_tables.sql of each engine, after its own distribution key).
    run_id      bigint NOT NULL,
    model_id    int NOT NULL,
    hops        int NOT NULL,
    array_index int NOT NULL,
    byte_offset int8 NOT NULL,
    data        bytea NOT NULL,

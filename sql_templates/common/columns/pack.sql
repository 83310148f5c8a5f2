-- The columns of a pack table (pack_create.sql of each engine, after its own distribution key).
    segment  int NOT NULL,
    bucket   int NOT NULL,
    rows     int NOT NULL,
    x        bytea NOT NULL,
    y        bytea NOT NULL,
    k        bytea NOT NULL

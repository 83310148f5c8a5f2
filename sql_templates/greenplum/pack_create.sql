-- Packed buffers on Greenplum: distributed by a key with one known value per segment (MADlib's
-- trick), so segment k's buffers live on segment k; validation buffers are copied to every segment.
CREATE TABLE {{table}} (
    dist_key int NOT NULL,
    segment  int NOT NULL,
    bucket   int NOT NULL,
    rows     int NOT NULL,
    x        bytea NOT NULL,
    y        bytea NOT NULL,
    k        bytea NOT NULL
) DISTRIBUTED BY (dist_key);
ALTER TABLE {{table}} ALTER COLUMN x SET STORAGE EXTERNAL;
ALTER TABLE {{table}} ALTER COLUMN y SET STORAGE EXTERNAL;
ALTER TABLE {{table}} ALTER COLUMN k SET STORAGE EXTERNAL;

-- Packed buffers of one source + settings: one list partition per virtual segment (a targeted
-- query scans one) and segment -1 for the validation buffers. Float32 bytes do not compress:
-- STORAGE EXTERNAL saves the attempt.
CREATE TABLE {{table}} (
    segment int NOT NULL,
    bucket  int NOT NULL,
    rows    int NOT NULL,
    x       bytea NOT NULL,
    y       bytea NOT NULL,
    k       bytea NOT NULL
) PARTITION BY LIST (segment);
{{partitions}}
ALTER TABLE {{table}} ALTER COLUMN x SET STORAGE EXTERNAL, ALTER COLUMN y SET STORAGE EXTERNAL,
    ALTER COLUMN k SET STORAGE EXTERNAL;

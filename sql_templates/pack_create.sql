-- Packed buffers of one source + settings. One partition per segment (a targeted query scans one),
-- and segment -1 for the validation buffers.
CREATE TABLE {{table}} (
    segment   int NOT NULL,
    buffer_id int NOT NULL,
    rows      int NOT NULL,
    x         bytea NOT NULL,
    y         bytea NOT NULL
) PARTITION BY LIST (segment);
CREATE TABLE {{validation_partition}} PARTITION OF {{table}} FOR VALUES IN (-1);

-- Packed buffers on Greenplum: distributed by a key with one known value per segment (MADlib's
-- trick), so segment k's buffers live on segment k; validation buffers are copied to every segment.
CREATE TABLE {{table}} (
    dist_key int NOT NULL,
{{include columns/pack.sql}}
) DISTRIBUTED BY (dist_key);
{{include columns/pack_storage.sql}}

-- Packed buffers of one source + settings: one list partition per virtual segment (a targeted
-- query scans one) and segment -1 for the validation buffers.
CREATE TABLE {{table}} (
{{include columns/pack.sql}}
) PARTITION BY LIST (segment);
{{partitions}}
{{include columns/pack_storage.sql}}

-- $1 pack_id, $2 source_table, $3 fingerprint, $4 settings, $5 table_name, $6 stats, $7 source schema,
-- $8 source name (packed_by: the current user, checked by row-level security)
INSERT INTO ctq.packs (pack_id, source_table, source_fingerprint, settings, table_name, stats, source_schema,
                       source_name)
VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8);

-- $1 pack_id, $2 source_table, $3 fingerprint, $4 settings, $5 table_name, $6 stats
INSERT INTO ctq.packs (pack_id, source_table, source_fingerprint, settings, table_name, stats)
VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb);

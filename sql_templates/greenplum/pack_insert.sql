-- The pack's catalog row, parameters as in common/pack_insert.sql (ctq.insert_pack: packed_by is the caller).
SELECT ctq.insert_pack($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8);

-- Greenplum 6 (PostgreSQL 9.4): to_regclass takes a cstring.
SELECT p.pack_id, p.table_name, p.stats::text AS stats
FROM ctq.packs p
WHERE p.pack_id = $1 AND to_regclass(p.table_name::cstring) IS NOT NULL;

-- The packs of a source's content ($1 schema, $2 name, $3 its content fingerprint) the caller may
-- see, newest first, with the settings and the statistics each was packed with
-- (packing.reused_profile).
SELECT p.pack_id, p.settings::text AS settings, p.stats::text AS stats
FROM ctq.packs p
WHERE p.source_schema = $1 AND p.source_name = $2 AND p.source_fingerprint = $3
ORDER BY p.created_at DESC;

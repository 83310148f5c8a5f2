-- The newest pack of a source ($1 schema, $2 name) the caller may see, other than $3 (packing.other_settings).
SELECT p.pack_id FROM ctq.packs p
WHERE p.source_schema = $1 AND p.source_name = $2 AND p.pack_id <> $3
ORDER BY p.created_at DESC LIMIT 1

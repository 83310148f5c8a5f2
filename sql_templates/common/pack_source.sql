-- The source a pack was made from, and what it held then: $1 pack_id.
SELECT p.source_schema, p.source_name, quote_ident(p.source_schema) || '.' || quote_ident(p.source_name) AS display, p.source_fingerprint, p.stats ->> 'source_as_of' AS as_of,
       p.created_at
FROM ctq.packs p
WHERE p.pack_id = $1;

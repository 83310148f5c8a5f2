-- The catalog generation of the ctq that installed this database (ctq.catalog.CATALOG_GENERATION),
-- 0 for a ctq from before generations were recorded.
SELECT coalesce((SELECT (value #>> '{}')::int FROM ctq.meta WHERE key = 'catalog_generation'), 0)

ARRAY[]::text[]

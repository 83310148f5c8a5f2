-- The header row of one segment's scoring query: $1 that segment's parameters.
INSERT INTO {{stage}} (dist_key, params) VALUES ({{dist_key}}, $1::text);

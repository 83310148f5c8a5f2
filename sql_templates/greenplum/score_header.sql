-- The header row of one segment's scoring query: $1 the model's state, $2 that segment's parameters.
INSERT INTO {{stage}} (dist_key, state, params) VALUES ({{dist_key}}, $1::bytea, $2::text);

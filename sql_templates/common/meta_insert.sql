-- ctq.meta's key $1 is $2 (JSON).
INSERT INTO ctq.meta (key, value) VALUES ($1, $2::jsonb)

-- The content fingerprint of the source, as the source profile computes it (source_profile.sql):
-- the sum of every row's version, which changes with any change of a row.
SELECT coalesce(sum(({{version}})::numeric), 0)::text FROM {{source}} s;

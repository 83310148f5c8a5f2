-- Whether the source $1 (its quoted name) is a hash-distributed Citus table (its rows on the workers).
SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass($1) AND partmethod = 'h')

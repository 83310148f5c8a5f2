-- One distribution-key value that hashes to each primary segment (MADlib's preprocessor trick).
DROP TABLE IF EXISTS pg_temp.ctq_segment_keys;
CREATE TEMP TABLE ctq_segment_keys AS SELECT g AS dist_key FROM generate_series(0, 99999) g DISTRIBUTED BY (dist_key);

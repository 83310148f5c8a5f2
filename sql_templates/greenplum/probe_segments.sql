-- ctq.probe() (Python version, Keras import) once on every primary segment; NULL where it fails.
SELECT gp_segment_id AS segment, ctq.probe()::text AS probe FROM gp_dist_random('gp_id') ORDER BY 1;

SELECT gp_segment_id AS segment, min(dist_key) AS dist_key FROM ctq_segment_keys GROUP BY 1 ORDER BY 1;

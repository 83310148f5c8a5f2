-- --python-path $1 on the coordinator and on every primary segment (each host needs it).
SELECT 'the coordinator' AS place, ctq.path_status($1) AS status
UNION ALL
SELECT 'segment ' || gp_segment_id, ctq.path_status($1) FROM gp_dist_random('gp_id');

-- The active primary workers that may hold shards (the coordinator is group 0).
SELECT count(*)::int FROM pg_dist_node WHERE isactive AND noderole = 'primary' AND shouldhaveshards AND groupid <> 0

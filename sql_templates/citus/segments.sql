-- The MOP segments the co-location group offers (hop_functions.sql), in segment order, and where
-- each segment's shard is placed.
SELECT s.segment, s.dist_key, s.shardid, n.nodeid, n.nodename, n.nodeport
FROM ctq.citus_segments s
JOIN pg_dist_placement p ON p.shardid = s.shardid
JOIN pg_dist_node n ON n.groupid = p.groupid AND n.noderole = 'primary'
ORDER BY s.segment

-- The memory check before segment {{segment}}'s warm-up, computed on that segment (its host's
-- memory), and how many primary segments share that host.
SELECT (SELECT ctq.model_sizes($1::text)::text FROM gp_dist_random('gp_id') WHERE gp_segment_id = {{segment}}) AS sizes,
       (SELECT count(*)::int FROM gp_segment_configuration c
        WHERE c.role = 'p' AND c.content >= 0
          AND c.hostname = (SELECT hostname FROM gp_segment_configuration
                            WHERE role = 'p' AND content = {{segment}})) AS sharing;

-- The memory check before segment {{segment}}'s warm-up, computed on that segment (its host's
-- memory) in its writer process (ctq.gp_model_sizes: where the preload imported Keras), and how many
-- primary segments share that host.
SELECT ctq.gp_model_sizes({{segment}}, $1::text) AS sizes,
       (SELECT count(*)::int FROM gp_segment_configuration c
        WHERE c.role = 'p' AND c.content >= 0
          AND c.hostname = (SELECT hostname FROM gp_segment_configuration
                            WHERE role = 'p' AND content = {{segment}})) AS sharing;

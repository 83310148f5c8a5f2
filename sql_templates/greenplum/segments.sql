SELECT count(*)::int FROM gp_segment_configuration WHERE role = 'p' AND content >= 0;

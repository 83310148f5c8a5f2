UNION ALL
      SELECT NULL, NULL, NULL, NULL, NULL, NULL, s.array_index, s.byte_offset, s.data
      FROM ctq.hop_states s WHERE s.dist_key = {{dist_key}} AND s.run_id = $2 AND s.model_id = $3 AND s.hops = $4::int
UNION ALL
      SELECT NULL, NULL, NULL, NULL, NULL, NULL, s.array_index, s.byte_offset, s.data
      FROM ctq.model_states s WHERE s.dist_key = {{dist_key}} AND s.run_id = $2 AND s.model_id = $3 AND s.hops = $4::int

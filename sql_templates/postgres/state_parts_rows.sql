UNION ALL
      SELECT NULL, NULL, NULL, NULL, NULL, NULL, s.array_index, s.byte_offset, s.data
      FROM ctq.model_states s WHERE s.run_id = $1 AND s.model_id = $2 AND s.hops = $6::int

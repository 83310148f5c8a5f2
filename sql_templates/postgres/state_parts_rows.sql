UNION ALL
      SELECT NULL, NULL, NULL, NULL, NULL, NULL, (s.p).array_index, (s.p).byte_offset, (s.p).data
      FROM (SELECT ctq.current_state_parts($1, $2) AS p) s WHERE (s.p).hops = $6::int

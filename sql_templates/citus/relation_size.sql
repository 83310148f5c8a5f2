-- A distributed table's size is its shards' on the workers; a table of the coordinator's, its own.
(CASE WHEN EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = {{oid}})
      THEN citus_total_relation_size({{oid}}) ELSE pg_total_relation_size({{oid}}) END)

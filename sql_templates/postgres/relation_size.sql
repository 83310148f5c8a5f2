-- A PostgreSQL pack is list-partitioned by segment: the parent itself holds nothing, so add up its
-- partitions (pg_partition_tree, PostgreSQL 12+, lists a plain table as itself).
(SELECT sum(pg_total_relation_size(t.relid))::bigint FROM pg_partition_tree({{oid}}) t)

-- Forget a pack (gc, once it found no run using it; on PostgreSQL a run being created with it right
-- now makes the foreign key check fail instead, and the pack stays). Two statements rather than a
-- DELETE with a subquery: Greenplum's ctq.packs is replicated and ctq.runs distributed.
DELETE FROM ctq.packs WHERE pack_id = $1;

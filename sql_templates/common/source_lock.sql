-- The read lock a source check takes on a table (packing._wait_for_the_source): {{wait}} NOWAIT,
-- to learn whether another session holds a lock it must wait for, or nothing, to wait for it.
LOCK TABLE {{source}} IN ACCESS SHARE MODE {{wait}};

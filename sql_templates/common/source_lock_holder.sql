-- A session holding (or queued for) a lock on relation $1 (an oid) that a read must wait for: the
-- access exclusive one (ALTER TABLE, VACUUM FULL, LOCK TABLE), for the message of a waiting check.
SELECT a.pid, a.usename, a.query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.relation = $1 AND l.mode = 'AccessExclusiveLock' AND a.pid <> pg_backend_pid()
ORDER BY l.granted DESC
LIMIT 1;

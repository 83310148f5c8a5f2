/* whether a coordinator drives run r now: it holds the run's session advisory lock (catalog.lock_run) */
EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = {{lock_class}}::oid
        AND l.objid = r.run_id::oid AND l.objsubid = 2 AND l.granted)

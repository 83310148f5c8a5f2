-- The runs `ctq rm` was asked to delete that the caller can see (row-level security applies), with
-- what goes with them; alive: a coordinator holds the run's lock (it is being driven now).
SELECT r.run_id, r.name, r.status,
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.classid = {{lock_class}}::oid
                 AND l.objid = r.run_id::oid AND l.objsubid = 2 AND l.granted) AS alive,
       (SELECT count(*) FROM ctq.models m WHERE m.run_id = r.run_id) AS models,
       (SELECT count(*) FROM ctq.hops h WHERE h.run_id = r.run_id) AS hops
FROM ctq.runs r WHERE r.run_id = ANY($1::bigint[])
ORDER BY r.run_id;

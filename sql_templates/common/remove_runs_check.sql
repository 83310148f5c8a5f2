-- The runs `ctq rm` was asked to delete that the caller can see (row-level security applies), with
-- what goes with them; alive: a coordinator holds the run's lock (it is being driven now).
SELECT r.run_id, r.name, {{run_status}} AS status,
       {{run_alive}} AS alive,
       (SELECT count(*) FROM ctq.models m WHERE m.run_id = r.run_id) AS models,
       (SELECT count(*) FROM ctq.hops h WHERE h.run_id = r.run_id) AS hops
FROM ctq.runs r WHERE r.run_id = ANY($1::bigint[])
ORDER BY r.run_id;

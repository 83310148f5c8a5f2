-- The runs a live coordinator drives now (ctq install does not change the server code under them).
SELECT r.run_id FROM ctq.runs r WHERE r.status = 'running' AND {{run_alive}} ORDER BY r.run_id;

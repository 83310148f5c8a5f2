/* run r's status as users are shown it: 'stale' for a run that says 'running' but whose coordinator is
   gone (ctq train --resume continues it); {{alive}} is run_alive.sql or a column holding it */
CASE WHEN r.status = 'running' AND NOT {{alive}} THEN 'stale' ELSE r.status END

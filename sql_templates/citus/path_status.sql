-- --python-path $1 on the coordinator and on every worker (each node needs it). (Inside the install's
-- transaction a worker has not committed ctq.path_status yet: it is asked with an inline check.)
SELECT 'the coordinator' AS place, ctq.path_status($1) AS status
UNION ALL
SELECT 'worker ' || w.nodename || ':' || w.nodeport,
       CASE WHEN w.success THEN w.result ELSE 'unreadable' END
FROM run_command_on_workers(format(
    $q$SELECT CASE WHEN pg_stat_file(%1$L, true) IS NULL THEN 'missing'
                   WHEN NOT (pg_stat_file(%1$L, true)).isdir THEN 'file' ELSE 'ok' END$q$, $1)) w

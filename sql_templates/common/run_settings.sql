-- $1 run_id: the settings a resumed run keeps. Runs recorded before the cost-aware rule have no
-- scheduling: they ran the random one. (Parentheses around ->>: PostgreSQL 9.4, under Greenplum 6,
-- binds IS tighter than ->>.)
SELECT (config ->> 'memory_budget_mb')::int AS budget, config -> 'data' ->> 'class_weight' AS class_weight,
       coalesce(config ->> 'scheduling', 'random') AS scheduling, config -> 'search' AS search,
       config -> 'resolved' AS resolved, (config ->> 'warm_start') IS NOT NULL AS warm,
       (config ->> 'checkpoint_minutes')::float8 AS checkpoint_minutes, (config ->> 'retries')::int AS retries
FROM ctq.runs WHERE run_id = $1;

-- The MOP rule run $1 was started with (runs before the rule was recorded used random).
SELECT coalesce(config ->> 'scheduling', 'random') FROM ctq.runs WHERE run_id = $1

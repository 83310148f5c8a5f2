-- Name a segment's session in pg_stat_activity (ctq cancels and ends its backends by this name).
SELECT set_config('application_name', $1, false)

-- Mark this server session with token $1 (connection.check_pooler: does the next statement reach it?).
SELECT set_config('ctq.session_probe', $1, false)

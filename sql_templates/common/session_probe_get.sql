-- The token session_probe_set.sql left in this server session, if it is the same session.
SELECT current_setting('ctq.session_probe', true)

-- Backends still working for a run whose coordinator died: stop them before resuming, so no hop of
-- the old session can commit behind the new one's back. $1 the application_name prefix.
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name LIKE $1 || '%' AND pid <> pg_backend_pid();

-- Cancel the statements still running for a coordinator that is stopping. $1 the application_name prefix.
SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
WHERE application_name LIKE $1 || '%' AND state = 'active' AND pid <> pg_backend_pid();

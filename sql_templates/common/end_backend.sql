-- The backend of a segment connection that failed, terminated if it is still there, so that a hop
-- it may still be running cannot commit after the catalog was asked whether it did (a client that
-- dropped its side is noticed by the server only when it next writes to it). Whether it is still
-- there. $1 its pid, $2 its application_name (a pid of another session is left alone).
SELECT count(pg_terminate_backend(pid)) > 0 FROM pg_stat_activity
WHERE pid = $1 AND application_name = $2 AND pid <> pg_backend_pid();

-- The server process behind this session (a pooler in front of it shows as a changing pid).
SELECT pg_backend_pid()

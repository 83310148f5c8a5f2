SELECT version() AS version,
       current_setting('server_version_num')::int AS version_num,
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'plpython3u') AS plpython_available,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'plpython3u') AS plpython_installed,
       EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'gp_segment_id') OR
       EXISTS (SELECT 1 FROM pg_class WHERE relname = 'gp_segment_configuration') AS greenplum,
       current_user AS user_name,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
       current_setting('max_connections')::int AS max_connections;

-- The sessions this role may hold at once (ctq train's check of segments + 2 before anything is
-- written): the server's max_connections, less superuser_reserved_connections for a role that is
-- not a superuser, and the role's own CONNECTION LIMIT (-1: none). Sessions of others are not
-- counted: they come and go.
SELECT current_setting('max_connections')::int
       - CASE WHEN r.rolsuper THEN 0 ELSE current_setting('superuser_reserved_connections')::int END AS server_limit,
       r.rolconnlimit AS role_limit
FROM pg_roles r WHERE r.rolname = current_user;

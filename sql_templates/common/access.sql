-- Who this session is and what it may do with ctq here (catalog.check_access): $1 the users' group role.
SELECT current_user AS who, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super,
       to_regclass('ctq.meta') IS NOT NULL AS installed,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS has_role

-- Whether role $1 is a direct member of group role $2 (what ctq grant adds and ctq revoke removes).
SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
               JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = $1 AND g.rolname = $2)

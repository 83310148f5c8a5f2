-- Whether role $1 exists (ctq grant / share name an existing role).
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)

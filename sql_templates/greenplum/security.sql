-- Not yet on Greenplum: with common/security.sql installed, hops on Greenplum 6 failed with
-- "relation not found (OID ...)" on a segment (cause not found yet). Greenplum keeps its
-- superuser-only model until then; the PostgreSQL engine has roles, grants and row-level security.
-- The group roles exist (the leaderboard view names ctq_admin):
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ctq_user') THEN
        CREATE ROLE ctq_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ctq_admin') THEN
        CREATE ROLE ctq_admin NOLOGIN;
    END IF;
END
$roles$;

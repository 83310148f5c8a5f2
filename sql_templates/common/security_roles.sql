-- The two group roles (idempotent): ctq_user for analysts, ctq_admin for administrators.
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

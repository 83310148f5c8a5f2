-- Greenplum 6 (PostgreSQL 9.4) has no row-level security: analysts (ctq_user) get no rights on the
-- run tables here (closed rather than open); administrators (ctq_admin, security.sql) train.
SELECT 1;

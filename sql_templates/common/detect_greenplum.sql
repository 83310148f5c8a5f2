-- Greenplum 6/7 and Cloudberry have gp_segment_configuration; PostgreSQL does not.
SELECT to_regclass('pg_catalog.gp_segment_configuration') IS NOT NULL

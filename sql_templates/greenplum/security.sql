-- Not yet on Greenplum: with common/security.sql installed, hops on Greenplum 6 failed with
-- "relation not found (OID ...)" on a segment (cause not found yet). Greenplum keeps its
-- superuser-only model until then; the PostgreSQL engine has roles, grants and row-level security.
-- The group roles exist (the leaderboard view names ctq_admin):
{{roles}}

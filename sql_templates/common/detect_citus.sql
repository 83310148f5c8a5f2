-- Citus has its extension in the database (its worker nodes are counted by citus/workers.sql).
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')

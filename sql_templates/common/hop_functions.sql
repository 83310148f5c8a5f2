-- (PostgreSQL needs no function for a hop: postgres/hop.sql is one statement.)

-- The segment a training or scoring function runs on, as the engine sees it from inside, recorded
-- as the hop's executed_on (a hop that ran elsewhere is refused): on PostgreSQL the virtual
-- segment the query targeted ($1), which is its own process's.
CREATE OR REPLACE FUNCTION ctq.execution_segment(int) RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT $1 $$;
REVOKE ALL ON FUNCTION ctq.execution_segment(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.execution_segment(int) TO ctq_user;

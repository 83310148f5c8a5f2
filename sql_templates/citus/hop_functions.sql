-- Citus: what every node must read, the state tables distributed, each MOP segment's shard, and
-- the functions of a hop (ctq/engines/citus.py). Run at the end of the install, on the coordinator.

-- What PL/Python reads on a worker (the bootstrap: python_path and the server code) is in
-- reference tables: a copy on every node, written through the coordinator.
DO $reference$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ctq.meta', 'ctq.server_code'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
            PERFORM create_reference_table(t);
        END IF;
    END LOOP;
END
$reference$;

-- The state tables, distributed by dist_key: model_states defines the co-location group of every
-- pack (its shard count: citus.shard_count at the first install, the most segments a run can have).
-- No row-level security on them (state_policy_tables.sql: none): a policy on a distributed table is
-- evaluated on the workers, which do not have ctq.runs. Access to them is the table privileges
-- (Citus grants them on every shard), see docs/citus.md.
DO $states$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'ctq.model_states'::regclass) THEN
        PERFORM create_distributed_table('ctq.model_states', 'dist_key', colocate_with => 'none');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'ctq.hop_states'::regclass) THEN
        PERFORM create_distributed_table('ctq.hop_states', 'dist_key', colocate_with => 'ctq.model_states');
    END IF;
END
$states$;

-- The MOP segments: one per shard of the co-location group, each with the smallest key value that
-- hashes into that shard. Numbered round-robin over the workers (a worker's first shard, then
-- every worker's second...), so that the first S segments of a run spread evenly; written anew by
-- every install (run `ctq install` again after moving shards).
CREATE TABLE IF NOT EXISTS ctq.citus_segments (
    segment  int PRIMARY KEY,
    dist_key int NOT NULL,
    shardid  bigint NOT NULL
);
DO $segments$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'ctq.citus_segments'::regclass) THEN
        PERFORM create_reference_table('ctq.citus_segments');
    END IF;
END
$segments$;
DELETE FROM ctq.citus_segments;
INSERT INTO ctq.citus_segments (segment, dist_key, shardid)
SELECT (row_number() OVER (ORDER BY x.turn, x.groupid, x.shardid) - 1)::int, x.dist_key, x.shardid
FROM (SELECT k.shardid, k.dist_key, p.groupid,
             row_number() OVER (PARTITION BY p.groupid ORDER BY k.shardid) AS turn
      FROM (SELECT get_shard_id_for_distribution_column('ctq.model_states', g) AS shardid, min(g)::int AS dist_key
            FROM generate_series(0, 99999) g GROUP BY 1) k
      JOIN pg_dist_placement p ON p.shardid = k.shardid) x;
GRANT SELECT ON ctq.citus_segments TO ctq_user;

-- The segment a training or scoring function runs on, from inside: $1 (the targeted segment) when
-- this node holds that segment's shard, else minus this node's id (pg_dist_node.nodeid), recorded
-- as the hop's executed_on: a hop that ran on another node is refused (ctq.record_hop).
-- (It reads a reference table from inside a query on a shard: Citus allows that once the function
-- says so.)
CREATE OR REPLACE FUNCTION ctq.execution_segment(int) RETURNS int
LANGUAGE plpgsql VOLATILE SET citus.allow_nested_distributed_execution = on AS $fn$
DECLARE shard bigint; here int;
BEGIN
    SELECT groupid INTO here FROM pg_dist_local_group;
    SELECT s.shardid INTO shard FROM ctq.citus_segments s WHERE s.segment = $1;
    IF EXISTS (SELECT 1 FROM pg_dist_placement p WHERE p.shardid = shard AND p.groupid = here) THEN
        RETURN $1;
    END IF;
    RETURN -(SELECT n.nodeid FROM pg_dist_node n WHERE n.groupid = here AND n.noderole = 'primary' LIMIT 1);
END
$fn$;
REVOKE ALL ON FUNCTION ctq.execution_segment(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.execution_segment(int) TO ctq_user;

-- Every PL/Python function of ctq may run on a worker inside a query on a shard, where it reads the
-- reference tables (the bootstrap): allowed there by this setting, function by function.
DO $nested$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
             WHERE p.pronamespace = 'ctq'::regnamespace AND l.lanname = 'plpython3u' LOOP
        EXECUTE format('ALTER FUNCTION %s SET citus.allow_nested_distributed_execution = on', f);
    END LOOP;
END
$nested$;

-- A model's state of p_hops hops (its parts, from either state table), copied from the shard of
-- key p_from to the shard of key p_key: called as SELECT ctq.citus_move_state(<key>, ...), it is
-- delegated to the worker of p_key's shard (a distributed function), which reads the parts from
-- p_from's worker itself: worker to worker, never through the coordinator or the client. A copy a
-- failed hop left there is replaced. Returns the parts copied (0: none were at p_from).
CREATE OR REPLACE FUNCTION ctq.citus_move_state(p_key int, p_run bigint, p_model int, p_hops int, p_from int)
RETURNS int
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE n int;
BEGIN
    IF p_key IS NULL OR p_run IS NULL OR p_model IS NULL OR p_hops IS NULL OR p_from IS NULL OR p_from = p_key THEN
        RAISE EXCEPTION 'ctq.citus_move_state: invalid arguments' USING ERRCODE = '22023';
    END IF;
    DELETE FROM ctq.hop_states WHERE dist_key = p_key AND run_id = p_run AND model_id = p_model AND hops = p_hops;
    INSERT INTO ctq.hop_states (dist_key, run_id, model_id, hops, array_index, byte_offset, data)
    SELECT p_key, s.run_id, s.model_id, s.hops, s.array_index, s.byte_offset, s.data FROM (
        SELECT x.run_id, x.model_id, x.hops, x.array_index, x.byte_offset, x.data FROM ctq.hop_states x
        WHERE x.dist_key = p_from AND x.run_id = p_run AND x.model_id = p_model AND x.hops = p_hops
        UNION ALL
        SELECT x.run_id, x.model_id, x.hops, x.array_index, x.byte_offset, x.data FROM ctq.model_states x
        WHERE x.dist_key = p_from AND x.run_id = p_run AND x.model_id = p_model AND x.hops = p_hops) s;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
SELECT create_distributed_function('ctq.citus_move_state(int, bigint, int, int, int)', 'p_key',
                                   colocate_with := 'ctq.model_states');
REVOKE ALL ON FUNCTION ctq.citus_move_state(int, bigint, int, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.citus_move_state(int, bigint, int, int, int) TO ctq_user;

-- ctq.state_parts for hop_store.sql: Citus sends an INSERT ... SELECT whole to the worker only when
-- it calls no VOLATILE function (else it pulls the rows through the coordinator). Within the one
-- statement that stores a hop's state, the parts of a state key are what they are: STABLE. Called
-- in a SELECT list, as ctq.state_parts is here, so that the parts stream one at a time.
CREATE OR REPLACE FUNCTION ctq.citus_state_parts(key text) RETURNS SETOF ctq.state_part
LANGUAGE sql STABLE AS $$ SELECT (s.p).array_index, (s.p).byte_offset, (s.p).data FROM (SELECT ctq.state_parts(key) AS p) s $$;
REVOKE ALL ON FUNCTION ctq.citus_state_parts(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.citus_state_parts(text) TO ctq_user;

-- Scoring: the parts of model p_model of run p_run's state of p_hops hops, in the shard of key
-- p_key, read from inside the scoring query on a worker (score_query.sql): the worker reads them
-- from the worker that holds them, never through the coordinator or the client. As its caller.
CREATE OR REPLACE FUNCTION ctq.citus_model_parts(p_run bigint, p_model int, p_key int, p_hops int)
RETURNS SETOF ctq.state_part
LANGUAGE plpgsql STABLE SET citus.allow_nested_distributed_execution = on AS $fn$
BEGIN
    RETURN QUERY
    SELECT s.array_index, s.byte_offset, s.data FROM ctq.hop_states s
    WHERE s.dist_key = p_key AND s.run_id = p_run AND s.model_id = p_model AND s.hops = p_hops
    UNION ALL
    SELECT s.array_index, s.byte_offset, s.data FROM ctq.model_states s
    WHERE s.dist_key = p_key AND s.run_id = p_run AND s.model_id = p_model AND s.hops = p_hops;
END
$fn$;
REVOKE ALL ON FUNCTION ctq.citus_model_parts(bigint, int, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.citus_model_parts(bigint, int, int, int) TO ctq_user;

"""Least privilege with real roles on the real server: an administrator installs and grants,
analysts train as ordinary roles and see only their own runs; hostile direct calls are refused."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import asyncpg
import pytest

from conftest import write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRID = """
    name: {name}
    data:
      table: {table}
      features: [f1, f2, f3, f4, f5, f6, f7, f8]
      label: label
      task: classification
      validation_fraction: 0.2
    segments: 2
    models:
      - name: tiny
        layers:
          - {{dense: 8, activation: relu}}
    search:
      method: grid
      seed: 1
      space:
        optimizer: [adam]
        learning_rate: [0.01]
        batch_size: [64]
    epochs: 2
    metric: val_accuracy
"""

ROLES = ("ctq_alice", "ctq_bob", "ctq_carol", "ctq_dave")


def as_role(dsn: str, role: str) -> str:
    """The session's DSN with another user (the embedded server trusts local connections)."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}" if "@" in rest else f"{scheme}://{role}@{rest}"


@pytest.fixture(scope="module")
async def world(dsn, small_table, tmp_path_factory):
    """Installed by the superuser; alice and bob may read the source, carol may not; dave is an
    administrator. alice has trained one run."""
    import os
    import subprocess
    import sys

    c = await asyncpg.connect(dsn)
    for role in ROLES:
        await c.execute(f"DROP OWNED BY {role}" if await c.fetchval(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1", role) else "SELECT 1")
        await c.execute(f"DROP ROLE IF EXISTS {role}")
        await c.execute(f"CREATE ROLE {role} LOGIN")
    await c.execute(f"GRANT SELECT ON {small_table} TO ctq_alice, ctq_bob")
    await c.close()
    d = tmp_path_factory.mktemp("priv")

    def cli(*args, role=None):
        env = dict(os.environ, CTQ_DSN=as_role(dsn, role) if role else dsn, CTQ_HOME=str(d), COLUMNS="200")
        return subprocess.run([sys.executable, "-m", "ctq.cli", *args], capture_output=True, text=True,
                              env=env, timeout=600)

    assert cli("install").returncode == 0
    for role in ("ctq_alice", "ctq_bob", "ctq_carol"):
        proc = cli("grant", role)
        assert proc.returncode == 0, proc.stderr
    assert cli("grant", "ctq_dave", "--admin").returncode == 0
    grid = write_grid(d, GRID.format(name="priv", table=small_table))
    proc = cli("train", str(grid), "--json", "-q", role="ctq_alice")
    assert proc.returncode == 0, proc.stderr
    return {"cli": cli, "grid": grid, "run": json.loads(proc.stdout), "dir": d}


async def connect_as(dsn, role):
    return await asyncpg.connect(as_role(dsn, role))


async def test_analyst_trains_as_an_ordinary_role(world, conn):
    run = world["run"]
    assert run["status"] == "succeeded" and run["hops"] == 2 * 2
    assert await conn.fetchval("SELECT run_by FROM ctq.runs WHERE run_id = $1", run["run_id"]) == "ctq_alice"
    assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'ctq_alice'")


async def state_after_hops(conn, run_id: int, hops: int) -> None:
    """Make the run's stored states claim ``hops`` hops (their weights do not matter to these tests),
    as they would after a coordinator died with the later hops unrecorded."""
    await conn.execute("UPDATE ctq.model_states SET hops = $2, data = CASE WHEN array_index = -1 THEN convert_to("
                       "jsonb_set(convert_from(data, 'UTF8')::jsonb, '{hops}', to_jsonb($2::int))::text, 'UTF8') "
                       "ELSE data END WHERE run_id = $1", run_id, hops)


async def give_working_state(conn, run_id: int, model_id: int) -> None:
    """Give the model a working state (a file: working_states_files.sql) beside its checkpoint: a copy of
    its current state, written as the server writes one."""
    from ctq import indb

    from conftest import stored_state

    hops = await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1 AND model_id = $2", run_id, model_id)
    data = Path(await conn.fetchval("SELECT current_setting('data_directory')"))
    folder = data / "ctq_states" / str(await conn.fetchval(
        "SELECT oid FROM pg_database WHERE datname = current_database()")) / str(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model_id}.{hops}"
    indb.write_state_file(str(path), indb.state_parts(await stored_state(conn, run_id, model_id), hops))
    owner = data.stat()
    for p in (folder.parent.parent, folder.parent, folder, path):
        os.chown(p, owner.st_uid, owner.st_gid)


async def test_analyst_resumes_and_lists_its_own_run(world, conn, dsn):
    run_id = world["run"]["run_id"]
    # as if the coordinator had died during the last epoch
    await conn.execute("DELETE FROM ctq.epochs WHERE run_id = $1 AND epoch = 1", run_id)
    await conn.execute("DELETE FROM ctq.hops WHERE run_id = $1 AND epoch = 1", run_id)
    await conn.execute("UPDATE ctq.runs SET status = 'interrupted' WHERE run_id = $1", run_id)
    await conn.execute("UPDATE ctq.models SET status = 'training' WHERE run_id = $1", run_id)
    await state_after_hops(conn, run_id, 2)  # ... and its state the one of epoch 0's end
    proc = world["cli"]("train", "--resume", str(run_id), "--json", "-q", role="ctq_alice")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hops"] == 2
    listed = world["cli"]("runs", "--json", role="ctq_alice")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
    models = world["cli"]("models", str(run_id), "--json", role="ctq_alice")
    assert models.returncode == 0 and len(json.loads(models.stdout)) == 1


async def test_second_analyst_sees_nothing_of_the_first(world, dsn, conn):
    run_id = world["run"]["run_id"]
    cli = world["cli"]
    listed = cli("runs", "--json", role="ctq_bob")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    for args in (("models", str(run_id)), ("train", "--resume", str(run_id))):
        proc = cli(*args, role="ctq_bob")
        assert proc.returncode == 2 and f"no run with id {run_id}" in proc.stderr, proc.stderr
    bob = await connect_as(dsn, "ctq_bob")
    try:
        for table in ("ctq.runs", "ctq.models", "ctq.model_states", "ctq.hops", "ctq.epochs",
                      "ctq.decisions", "ctq.leaderboard"):
            assert await bob.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # changing alice's rows: nothing matches
        assert await bob.execute("UPDATE ctq.models SET state = NULL WHERE run_id = $1", run_id) == "UPDATE 0"
        assert await bob.execute("DELETE FROM ctq.model_states WHERE run_id = $1", run_id) == "DELETE 0"
        # nor read, overwrite or delete her working states (files, which no row-level security
        # guards: working_states_files.sql checks the caller itself)
        await give_working_state(conn, run_id, 1)
        current = "SELECT count(*) FROM (SELECT ctq.current_state_parts($1, 1)) s"
        assert await bob.fetchval(current, run_id) == 0
        for statement in ("SELECT ctq.drop_working_states($1)", "SELECT ctq.store_working_state('1', $1, 1, 1)"):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await bob.fetchval(statement, run_id)
        alice = await connect_as(dsn, "ctq_alice")
        try:
            assert await alice.fetchval(current, run_id) > await conn.fetchval(
                "SELECT count(*) FROM ctq.model_states WHERE run_id = $1 AND model_id = 1", run_id)
            assert await alice.fetchval("SELECT ctq.drop_working_states($1)", run_id) == 1
        finally:
            await alice.close()
        # nor roll her run back to its checkpoints
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await bob.fetch("SELECT * FROM ctq.restore_checkpoints($1, 2)", run_id)
        assert await bob.execute("UPDATE ctq.runs SET run_by = 'ctq_bob' WHERE run_id = $1", run_id) == "UPDATE 0"
        # alice's pack table is alice's: bob (who can read the source) has not asked to reuse it
        table = await bob.fetchval("SELECT table_name FROM ctq.packs LIMIT 1")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await bob.fetch(f"SELECT * FROM {table}")
    finally:
        await bob.close()


async def test_second_analyst_with_select_reuses_the_pack_and_trains(world, conn):
    proc = world["cli"]("train", str(world["grid"]), "--name", "bob-run", "--json", "-q", role="ctq_bob")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["pack_reused"] and doc["status"] == "succeeded"
    # alice still sees only hers
    listed = world["cli"]("runs", "--json", role="ctq_alice")
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [world["run"]["run_id"]]
    admin = world["cli"]("runs", "--json", role="ctq_dave")
    assert {r["run_id"] for r in json.loads(admin.stdout)} >= {world["run"]["run_id"], doc["run_id"]}


async def test_analyst_without_select_on_the_source_is_refused_before_anything_is_written(world, conn, dsn):
    before = await conn.fetchval("SELECT (SELECT count(*) FROM ctq.runs) + (SELECT count(*) FROM ctq.packs)")
    proc = world["cli"]("train", str(world["grid"]), "--name", "carol-run", "-q", role="ctq_carol")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "SELECT" in lines[0] and "GRANT SELECT ON" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    after = await conn.fetchval("SELECT (SELECT count(*) FROM ctq.runs) + (SELECT count(*) FROM ctq.packs)")
    assert after == before
    carol = await connect_as(dsn, "ctq_carol")
    try:
        assert await carol.fetchval("SELECT count(*) FROM ctq.packs") == 0  # not even its statistics
        pack_id = await conn.fetchval("SELECT pack_id FROM ctq.packs LIMIT 1")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await carol.fetch(f"SELECT * FROM ctq_data.pack_{pack_id}")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="no SELECT privilege"):
            await carol.fetchval("SELECT ctq.use_pack($1)", pack_id)
    finally:
        await carol.close()
    # ctq packs as carol: alice's pack is not hers to see, nor an "orphaned" table (its row exists)
    proc = world["cli"]("packs", "--json", role="ctq_carol")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert pack_id not in {p["pack_id"] for p in listing["packs"] + listing["orphans"]}, listing


async def test_a_table_in_a_schema_without_usage_names_every_grant_it_takes(world, conn, small_table):
    """SELECT on a table is not enough without USAGE on its schema: the refusal named only SELECT,
    and the analyst who got it was refused again for USAGE (a user trial). Every missing grant is
    named, in one line, before anything is written."""
    await conn.execute("DROP SCHEMA IF EXISTS priv_hidden CASCADE; CREATE SCHEMA priv_hidden; "
                       f"CREATE TABLE priv_hidden.src AS SELECT * FROM {small_table}")
    grid = write_grid(world["dir"], GRID.format(name="hidden", table="priv_hidden.src"), "hidden.yaml")
    both = 'GRANT USAGE ON SCHEMA "priv_hidden" TO "ctq_alice"; GRANT SELECT ON "priv_hidden"."src" TO "ctq_alice"'
    try:
        for grant, lacks, fix in [
            ("", "no USAGE on schema priv_hidden and no SELECT privilege on priv_hidden.src", both),
            ("GRANT SELECT ON priv_hidden.src TO ctq_alice", "no USAGE on schema priv_hidden, which holds "
             "priv_hidden.src", 'run: GRANT USAGE ON SCHEMA "priv_hidden" TO "ctq_alice"'),
        ]:
            if grant:
                await conn.execute(grant)
            proc = world["cli"]("train", str(grid), "-q", role="ctq_alice")
            assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
            assert f"role ctq_alice has {lacks} (data.table)" in proc.stderr and fix in proc.stderr, proc.stderr
        assert not await conn.fetchval("SELECT count(*) FROM ctq.runs WHERE name = 'hidden'")
    finally:
        await conn.execute("DROP SCHEMA priv_hidden CASCADE")


async def test_a_load_refused_for_a_privilege_exits_2_with_the_fix(world, conn):
    """ctq load into a schema alice may not create in exited 3 ('retry later': a cron job would
    retry for ever) with the driver's class name; a missing privilege is exit 2 wherever found."""
    csv = world["dir"] / "load.csv"
    csv.write_text("a,b\n1,2\n")
    await conn.execute("DROP SCHEMA IF EXISTS priv_ro CASCADE; CREATE SCHEMA priv_ro; "
                       "GRANT USAGE ON SCHEMA priv_ro TO ctq_alice")
    try:
        proc = world["cli"]("load", str(csv), "--table", "priv_ro.x", role="ctq_alice")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "permission denied for schema priv_ro" in proc.stderr and "Error:" not in proc.stderr
        assert "GRANT CREATE ON SCHEMA priv_ro TO ctq_alice" in proc.stderr
    finally:
        await conn.execute("DROP SCHEMA priv_ro CASCADE")


async def test_a_role_without_ctq_user_gets_one_line_and_the_fix(world, dsn, conn):
    await conn.execute("DROP ROLE IF EXISTS ctq_eve")
    await conn.execute("CREATE ROLE ctq_eve LOGIN")
    try:
        for args in (("train", str(world["grid"]), "-q"), ("runs",)):
            proc = world["cli"](*args, role="ctq_eve")
            assert proc.returncode == 2, proc.stderr
            # the line administration.md shows, whichever statement met the refusal first (ctq runs
            # said "permission denied (permission denied for schema ctq); ...": a user trial)
            assert proc.stderr == ("error: role ctq_eve is not a member of ctq_user (no use of schema ctq); "
                                   "ask an administrator to run: ctq grant ctq_eve\n"), proc.stderr
        # ctq doctor lists its checks, the access one failing with its fix (it stopped at the grant line)
        doctor = world["cli"]("doctor", "--json", role="ctq_eve")
        assert isinstance(json.loads(doctor.stdout), list), doctor.stdout + doctor.stderr
        checks = {c["name"]: c for c in json.loads(doctor.stdout)}
        assert doctor.returncode == 3 and checks["database"]["ok"] and checks["plpython3u"]["ok"], doctor.stdout
        assert not checks["access"]["ok"] and checks["access"]["fix"] == "ask an administrator to run: ctq grant ctq_eve"
        assert world["cli"]("grant", "ctq_eve", role="ctq_alice").returncode == 2  # analysts cannot grant
        assert world["cli"]("grant", "ctq_eve").stdout == "granted ctq_user to ctq_eve\n"
        assert world["cli"]("grant", "ctq_eve").stdout == "ctq_eve is already a member of ctq_user\n"
        assert world["cli"]("runs", role="ctq_eve").returncode == 0
        assert world["cli"]("revoke", "ctq_eve").stdout == "revoked ctq_user from ctq_eve\n"
        again = world["cli"]("revoke", "ctq_eve")  # it said 'revoked' of a membership that was not there
        assert again.returncode == 0 and again.stdout == "ctq_eve was not a member of ctq_user: nothing to revoke\n"
        for args in (("runs",), ("models", "1"), ("packs",)):
            proc = world["cli"](*args, role="ctq_eve")
            assert proc.returncode == 2 and "is not a member of ctq_user" in proc.stderr, proc.stderr
        assert world["cli"]("grant", "no_such_role").returncode == 2
        for name, words in (("", "the role name is empty"), ("public", "'public' is not a role but a keyword")):
            proc = world["cli"]("grant", name)  # (it suggested CREATE ROLE "public", which fails)
            assert proc.returncode == 2 and words in proc.stderr and f'CREATE ROLE "{name}"' not in proc.stderr
    finally:
        await conn.execute("DROP ROLE IF EXISTS ctq_eve")


# Hostile direct calls, as an analyst (bob, who can read the source) and as an administrator (dave).
HOSTILE = [
    ("ctq_bob", "SELECT ctq.use_pack($$'; DROP TABLE ctq.runs; --$$)"),
    ("ctq_bob", "SELECT ctq.use_pack('0123456789abcdef; SELECT 1')"),
    ("ctq_bob", "SELECT ctq.use_pack('0123456789ABCDEF')"),
    ("ctq_bob", "SELECT ctq.use_pack('../../etc/passwd')"),
    ("ctq_bob", "SELECT ctq.use_pack(NULL)"),
    ("ctq_bob", "SELECT ctq.use_pack('00000000000000ff')"),
    ("ctq_bob", "SELECT ctq.data_cached($$x'); DROP TABLE ctq.runs; --$$, 0)"),
    ("ctq_bob", "SELECT ctq.data_cached('0123456789abcdef', -7)"),
    ("ctq_bob", "SELECT ctq.path_status('/etc')"),
    ("ctq_bob", "SELECT ctq.record_hop({alice_run}, 1, 0, 0, false, "
                "ROW(NULL, 0, 0, 1, 0, 0, 0, now(), now(), 0, NULL, NULL)::ctq.hop_result)"),
    ("ctq_bob", "SELECT ctq.record_hop({alice_run}, 1, -1, 0, false, "
                "ROW(NULL, 0, 0, 1, 0, 0, 0, now(), now(), 0, NULL, NULL)::ctq.hop_result)"),
    ("ctq_bob", "SELECT ctq.record_hop({alice_run}, 1, 5, 0, true, NULL)"),
    ("ctq_bob", "INSERT INTO ctq.runs (name, status, config, config_fingerprint, source_table, pack_id, segments, "
                "epochs, metric, metric_mode, run_by) SELECT 'x', 'running', '{{}}', 'x', 'x', pack_id, 1, 1, "
                "'loss', 'min', 'ctq_alice' FROM ctq.packs LIMIT 1"),
    ("ctq_bob", "INSERT INTO ctq.hops (run_id, model_id, epoch, segment, started_at, finished_at, compute_seconds, "
                "rows) VALUES ({alice_run}, 1, 9, 0, now(), now(), 0, 0)"),
    ("ctq_bob", "INSERT INTO ctq.packs (pack_id, source_table, source_fingerprint, settings, table_name, stats, "
                "source_schema, source_name) VALUES ('00000000000000aa', 'x', 'x', '{{}}', 'pg_catalog.pg_authid', "
                "'{{}}', 'public', 'small')"),
    ("ctq_bob", "INSERT INTO ctq.packs (pack_id, source_table, source_fingerprint, settings, table_name, stats, "
                "source_schema, source_name, packed_by) VALUES ('00000000000000ab', 'x', 'x', '{{}}', "
                "'ctq_data.pack_00000000000000ab', '{{}}', 'public', 'small', 'ctq_alice')"),
    ("ctq_bob", "UPDATE ctq.server_code SET source = 'import os'"),
    ("ctq_bob", "INSERT INTO ctq.meta VALUES ('python_path', '[\"/tmp\"]')"),
    ("ctq_bob", "DELETE FROM ctq.meta"),
    ("ctq_bob", "CREATE FUNCTION ctq.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
    ("ctq_bob", "CREATE TABLE ctq.server_code2 (x int)"),
    ("ctq_bob", "DELETE FROM ctq.runs"),
    ("ctq_bob", "ALTER TABLE ctq.runs DISABLE ROW LEVEL SECURITY"),
    ("ctq_bob", "DROP POLICY own_runs ON ctq.runs"),
    ("ctq_carol", "SELECT * FROM ctq_data.pack_{alice_pack}"),
    ("ctq_carol", "SELECT ctq.use_pack('{alice_pack}')"),
    ("ctq_dave", "UPDATE ctq.server_code SET source = 'import os'"),
    ("ctq_dave", "INSERT INTO ctq.meta VALUES ('python_path', '[\"/tmp\"]')"),
    ("ctq_dave", "UPDATE ctq.meta SET value = '[\"/tmp\"]' WHERE key = 'python_path'"),
    ("ctq_dave", "CREATE OR REPLACE FUNCTION ctq.probe() RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb'"),
    ("ctq_dave", "SELECT ctq.path_status('/etc')"),
]


async def test_hostile_direct_calls_are_refused(world, conn, dsn):
    alice_run = world["run"]["run_id"]
    alice_pack = await conn.fetchval("SELECT pack_id FROM ctq.runs WHERE run_id = $1", alice_run)
    before = await conn.fetchval("SELECT md5(string_agg(source, '')) FROM ctq.server_code")
    refused = []
    for role, statement in HOSTILE:
        sql = statement.format(alice_run=alice_run, alice_pack=alice_pack)
        c = await connect_as(dsn, role)
        try:
            with pytest.raises(asyncpg.PostgresError) as err:
                await c.execute(sql)
            refused.append(err.value.sqlstate)
        finally:
            await c.close()
    assert set(refused) <= {"42501", "22023", "XX000", "38000", "42P01"}, refused
    assert len(refused) == len(HOSTILE) >= 30
    # nothing changed
    assert await conn.fetchval("SELECT md5(string_agg(source, '')) FROM ctq.server_code") == before
    assert await conn.fetchval("SELECT count(*) FROM ctq.meta WHERE key = 'python_path'") == 0
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1 AND epoch >= 5", alice_run) == 0
    assert await conn.fetchval("SELECT count(*) FROM ctq.packs WHERE pack_id LIKE '00000000000000%'") == 0
    assert await conn.fetchval("SELECT to_regprocedure('ctq.evil()')") is None
    # the installer can change the server code (rolled back)
    tr = conn.transaction()
    await tr.start()
    assert await conn.execute("UPDATE ctq.server_code SET installed_at = installed_at") == "UPDATE 2"
    await tr.rollback()


async def test_owner_shares_a_run_read_only_with_a_role(world, conn, dsn):
    """alice shares her run with a group role bob belongs to: bob reads it (runs, models, the
    tables, the leaderboard) but cannot change, resume or re-share it; carol still sees nothing;
    revoking closes it again."""
    run_id = world["run"]["run_id"]
    cli = world["cli"]
    await conn.execute("DROP ROLE IF EXISTS ctq_team")
    await conn.execute("CREATE ROLE ctq_team NOLOGIN")
    await conn.execute("GRANT ctq_team TO ctq_bob")
    try:
        assert cli("share", str(run_id), "ctq_team", role="ctq_bob").returncode == 2  # not bob's to share
        assert cli("share", str(run_id), "no_such_role", role="ctq_alice").returncode == 2
        own = cli("share", str(run_id), "ctq_alice", role="ctq_alice")  # was recorded, and shown as a reader
        assert own.returncode == 2 and f"run {run_id} is ctq_alice's own" in own.stderr, own.stderr
        proc = cli("share", str(run_id), "ctq_team", role="ctq_alice")
        assert proc.returncode == 0 and "ctq_team" in proc.stdout, proc.stderr
        listed = json.loads(cli("runs", "--json", role="ctq_bob").stdout)
        assert run_id in {r["run_id"] for r in listed}
        models = cli("models", str(run_id), "--json", role="ctq_bob")
        assert models.returncode == 0 and len(json.loads(models.stdout)) == 1
        bob = await connect_as(dsn, "ctq_bob")
        try:
            for table in ("ctq.runs", "ctq.models", "ctq.hops", "ctq.epochs", "ctq.leaderboard",
                          "ctq.learning_curves", "ctq.segment_utilization"):
                assert await bob.fetchval(f"SELECT count(*) FROM {table} WHERE run_id = $1", run_id) > 0, table
            assert await bob.fetchval("SELECT count(*) > 0 FROM ctq.model_states WHERE run_id = $1", run_id)
            # read-only: no change reaches the rows, and no hop can be added
            for sql in ("UPDATE ctq.models SET state = NULL WHERE run_id = $1",
                        "UPDATE ctq.runs SET shared_with = '{}' WHERE run_id = $1",
                        "DELETE FROM ctq.model_states WHERE run_id = $1",
                        "DELETE FROM ctq.hops WHERE run_id = $1"):
                try:
                    assert (await bob.execute(sql, run_id)).endswith(" 0"), sql
                except asyncpg.exceptions.InsufficientPrivilegeError:
                    pass
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await bob.execute("INSERT INTO ctq.hops (run_id, model_id, epoch, segment, started_at, finished_at, "
                                  "compute_seconds, rows) VALUES ($1, 1, 9, 0, now(), now(), 0, 0)", run_id)
        finally:
            await bob.close()
        resumed = cli("train", "--resume", str(run_id), "-q", role="ctq_bob")
        assert resumed.returncode in (2, 3) and "read-only" in resumed.stderr, resumed.stderr
        assert resumed.stderr.strip().count("\n") == 0
        carol = json.loads(cli("runs", "--json", role="ctq_carol").stdout)
        assert run_id not in {r["run_id"] for r in carol}
        # a reader uses the run's model only if it may read the run's source (the pack's statistics
        # describe it): bob may, carol (in the team too) may not, and is told what is missing
        exported = world["dir"] / "shared.keras"
        proc = cli("export", str(run_id), str(exported), role="ctq_bob")
        assert proc.returncode == 0 and exported.exists(), proc.stderr
        await conn.execute("GRANT ctq_team TO ctq_carol")
        proc = cli("export", str(run_id), str(exported), "--force", role="ctq_carol")
        await conn.execute("REVOKE ctq_team FROM ctq_carol")
        assert proc.returncode == 2 and "cannot read the pack" in proc.stderr and "GRANT SELECT ON" in proc.stderr
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
        proc = cli("share", str(run_id), "ctq_team", "--revoke", role="ctq_alice")
        assert proc.returncode == 0 and "no one" in proc.stdout, proc.stdout
        assert run_id not in {r["run_id"] for r in json.loads(cli("runs", "--json", role="ctq_bob").stdout)}
    finally:
        await conn.execute("UPDATE ctq.runs SET shared_with = '{}' WHERE run_id = $1", run_id)
        await conn.execute("REVOKE ctq_team FROM ctq_bob")
        await conn.execute("DROP ROLE ctq_team")


async def test_administrator_resumes_another_users_run_only_with_select_on_its_source(world, conn, small_table):
    """dave (ctq_admin) may resume alice's interrupted run, but the pack rule holds for him too:
    without SELECT on the source he is refused with the missing privilege, nothing changed."""
    run_id = world["run"]["run_id"]
    await conn.execute("DELETE FROM ctq.epochs WHERE run_id = $1 AND epoch = 1", run_id)
    await conn.execute("DELETE FROM ctq.hops WHERE run_id = $1 AND epoch = 1", run_id)
    await state_after_hops(conn, run_id, 2)
    await conn.execute("UPDATE ctq.runs SET status = 'interrupted' WHERE run_id = $1", run_id)
    refused = world["cli"]("train", "--resume", str(run_id), "-q", role="ctq_dave")
    assert refused.returncode == 2 and "no SELECT privilege" in refused.stderr, refused.stderr
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "interrupted"
    await conn.execute(f"GRANT SELECT ON {small_table} TO ctq_dave")
    try:
        proc = world["cli"]("train", "--resume", str(run_id), "--json", "-q", role="ctq_dave")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["hops"] == 2
        assert await conn.fetchval("SELECT run_by FROM ctq.runs WHERE run_id = $1", run_id) == "ctq_alice"
    finally:
        await conn.execute(f"REVOKE SELECT ON {small_table} FROM ctq_dave")


async def test_analyst_predicts_with_its_own_run_and_nobody_else_can(world, conn, small_table):
    """ctq predict as an ordinary role: the scoring functions are granted to ctq_user; the run is
    visible to its analyst only (row-level security), so another analyst is told there is no such run."""
    run_id = str(world["run"]["run_id"])
    await conn.execute(f"DROP TABLE IF EXISTS public.priv_score; CREATE TABLE public.priv_score AS "
                       f"SELECT row_number() OVER () AS id, * FROM {small_table} LIMIT 300")
    await conn.execute("GRANT SELECT ON public.priv_score TO ctq_alice, ctq_bob")
    await conn.execute("CREATE SCHEMA IF NOT EXISTS ctq_alice_out AUTHORIZATION ctq_alice")
    args = ("predict", run_id, "--table", "public.priv_score", "--id-column", "id", "--out", "ctq_alice_out.scored")
    # into a schema she may not create tables in: the grant that is missing, not "ctq grant"
    await conn.execute("CREATE SCHEMA IF NOT EXISTS ctq_closed")
    proc = world["cli"](*args[:-1], "ctq_closed.scored", role="ctq_alice")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert 'GRANT CREATE ON SCHEMA "ctq_closed" TO "ctq_alice"' in proc.stderr and "ctq grant" not in proc.stderr
    proc = world["cli"](*args, role="ctq_alice")
    assert proc.returncode == 0, proc.stderr
    assert await conn.fetchval("SELECT count(*) FROM ctq_alice_out.scored") == 300
    proc = world["cli"](*args, "--replace", role="ctq_bob")
    assert proc.returncode == 2 and f"no run with id {run_id}" in proc.stderr, proc.stderr


@pytest.mark.parametrize("message, hint", [
    ("permission denied for schema ctq", "ctq grant alice"),
    ("permission denied for table runs", "ctq grant alice"),  # row-level security on ctq's own tables
    ("permission denied for table ctq_data.pack_0123456789abcdef", "ctq grant alice"),
    ("new row violates row-level security policy for table \"hops\"", "ctq grant alice"),
    ("permission denied for schema sales", "GRANT CREATE ON SCHEMA sales TO alice"),
    ("permission denied for table sales.orders", "GRANT SELECT ON sales.orders TO alice"),
    ("permission denied for table orders", "GRANT SELECT ON orders TO alice"),
    ('permission denied to create "pg_catalog.ctq_predict_023099f0fb8f6479"', "use another schema"),
    ('permission denied to create "sales.scored"', "GRANT CREATE ON SCHEMA sales TO alice"),
])
async def test_a_missing_privilege_names_its_fix(message, hint):
    from ctq.errors import privilege_hint

    assert hint in privilege_hint(message, "alice")


RECORD_HOP = "ctq.record_hop(bigint, int, int, int, boolean, ctq.hop_result, int)"


async def test_a_missing_privilege_exits_2_wherever_it_is_found(world, conn):
    """One exit code (2) and one line for a missing privilege, found by ctq before the run (carol may
    not read the source), by a statement the server refuses with SQLSTATE 42501 (an analyst
    installing), or by a run's hop (EXECUTE on ctq.record_hop revoked from ctq_user): the run stops
    there, its model not failed, and resumes once the privilege is back."""
    cli = world["cli"]

    def refused(proc, *words):
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert all(w in proc.stderr for w in words), proc.stderr

    refused(cli("train", str(world["grid"]), "--name", "carol-denied", "-q", role="ctq_carol"), "SELECT")
    refused(cli("install", role="ctq_alice"), "permission denied", "a superuser must run `ctq install`")
    # another version's server code (a new ctq checked out): only a superuser's command upgrades it, and
    # doctor says so to an analyst (it said the analyst's next train would: a user trial)
    sha = await conn.fetchval("SELECT value FROM ctq.meta WHERE key = 'install_sha'")
    await conn.execute("""UPDATE ctq.meta SET value = '"another ctq"' WHERE key = 'install_sha'""")
    try:
        refused(cli("train", str(world["grid"]), "--name", "alice-outdated", "-q", role="ctq_alice"),
                "ctq's server code in this database is not this ctq's (another version installed it) and only a "
                "superuser can install it; ask an administrator to run: ctq install")
        doctor = cli("doctor", role="ctq_alice")
        assert "run by a superuser (you are not one) upgrades it" in doctor.stdout, doctor.stdout
    finally:
        await conn.execute("UPDATE ctq.meta SET value = $1 WHERE key = 'install_sha'", sha)
    await conn.execute(f"REVOKE EXECUTE ON FUNCTION {RECORD_HOP} FROM ctq_user")
    try:
        proc = cli("train", str(world["grid"]), "--name", "hop-denied", "--json", "-q", role="ctq_alice")
    finally:
        await conn.execute(f"GRANT EXECUTE ON FUNCTION {RECORD_HOP} TO ctq_user")
    refused(proc, "permission denied for function record_hop", "ctq train --resume")
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 2 and doc["run_id"] is not None, doc
    run_id = doc["run_id"]
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "failed"
    assert await conn.fetchval("SELECT count(*) FROM ctq.models WHERE run_id = $1 AND status = 'failed'", run_id) == 0
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) == 0
    resumed = cli("train", "--resume", str(run_id), "--json", "-q", role="ctq_alice")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"


async def test_a_role_revoked_mid_run_stops_it_resumable_naming_the_run_and_the_grant(world, conn, dsn):
    """ctq revoke of the running analyst: the run could not even record its end; the command
    said 'ctq grant <your role>' and --json's run_id was null, so the documented resume recipe
    failed (a user trial). It names the run and the role's grant, exit 2; granted again, the
    run resumes to the end."""
    import os
    import subprocess
    import sys

    cli = world["cli"]
    slow = GRID.format(name="revoked", table="public.small").replace("batch_size: [64]", "batch_size: [4]") \
        .replace("epochs: 2", "epochs: 4")  # hops long enough for the revoke to land inside the run
    grid = write_grid(world["dir"], slow, "revoked.yaml")
    env = dict(os.environ, CTQ_DSN=as_role(dsn, "ctq_alice"), CTQ_HOME=str(world["dir"]))
    proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", "train", str(grid), "--json", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(1200):
            if await conn.fetchval("SELECT count(*) FROM ctq.hops h JOIN ctq.runs r USING (run_id) "
                                   "WHERE r.name = 'revoked'") or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert cli("revoke", "ctq_alice").returncode == 0
        out, err = proc.communicate(timeout=300)
    finally:
        cli("grant", "ctq_alice")
    run_id = await conn.fetchval("SELECT run_id FROM ctq.runs WHERE name = 'revoked'")
    doc = json.loads(out)
    assert proc.returncode == 2 and doc["run_id"] == run_id, (doc, err)
    assert "ctq grant ctq_alice" in doc["error"] and f"ctq train --resume {run_id}" in doc["error"], doc
    resumed = cli("train", "--resume", str(run_id), "--json", "-q", role="ctq_alice")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["status"] == "succeeded", resumed.stderr

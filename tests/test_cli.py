"""One test (or a few) per CLI command that test_train/test_reliability do not already cover."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_db_status_and_url_describe_the_running_embedded_database(run_cli, cluster):
    status = run_cli("db", "status", "--json", env={"CTQ_DSN": ""})
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["running"] is True and doc["dsn"] == cluster.dsn
    url = run_cli("db", "url", env={"CTQ_DSN": ""})
    assert url.stdout.strip() == cluster.dsn


CATALOG_TABLES = ("ctq.packs", "ctq.runs", "ctq.models", "ctq.model_states", "ctq.hops", "ctq.epochs")


async def catalog_snapshot(conn) -> dict:
    return {t: sorted(tuple(r) for r in await conn.fetch(f"SELECT t::text FROM {t} t")) for t in CATALOG_TABLES}


async def insert_run(conn, run_id: int, pack_id: str) -> None:
    """A run (and its pack row) written straight into the catalog, as an earlier ctq left it."""
    await conn.execute(
        "INSERT INTO ctq.packs (pack_id, source_table, source_fingerprint, settings, table_name, stats) "
        "VALUES ($1, 'public.x', 'fp', '{}', 'ctq_data.pack_' || $1, '{}')", pack_id)
    await conn.execute(
        "INSERT INTO ctq.runs (run_id, name, status, config, config_fingerprint, source_table, pack_id, segments, "
        "epochs, metric, metric_mode) VALUES ($1, 'old', 'interrupted', '{}', 'fp', 'public.x', $2, 2, 1, "
        "'val_loss', 'min')", run_id, pack_id)


async def test_install_is_idempotent(run_cli, conn):
    """Installing again keeps every run, model checkpoint, hop and epoch exactly as they were."""
    proc = run_cli("install")
    assert proc.returncode == 0, proc.stderr
    assert "installed" in proc.stdout
    await insert_run(conn, -77, "idem")
    await conn.execute("""
        INSERT INTO ctq.models (run_id, model_id, name, architecture, hyperparameters, seed, epochs_done)
        VALUES (-77, 1, 'm', '{}', '{}', 1, 1);
        INSERT INTO ctq.model_states (run_id, model_id, hops, array_index, byte_offset, data)
        VALUES (-77, 1, 2, -1, 0, '\\x7b7d'::bytea);
        INSERT INTO ctq.hops (run_id, model_id, epoch, segment, started_at, finished_at, compute_seconds, rows)
        VALUES (-77, 1, 0, 0, now(), now(), 1, 10), (-77, 1, 0, 1, now(), now(), 1, 10);
        INSERT INTO ctq.epochs (run_id, model_id, epoch, finished_at) VALUES (-77, 1, 0, now());
    """)
    try:
        before = await catalog_snapshot(conn)
        assert all(before[t] for t in CATALOG_TABLES)
        proc = run_cli("install")
        assert proc.returncode == 0, proc.stderr
        assert "installed" in proc.stdout
        assert await catalog_snapshot(conn) == before
        assert await conn.fetchval("SELECT count(*) FROM ctq.server_code") == 2  # ctq/rules.py, ctq/indb.py
    finally:
        await conn.execute("DELETE FROM ctq.runs WHERE run_id = -77; DELETE FROM ctq.packs WHERE pack_id = 'idem'")


async def test_install_waits_for_no_run_to_be_live(run_cli, conn, dsn):
    """`ctq install` while a run trained deadlocked with its hops and exited 1 (a user trial):
    while a run is live it is refused, exit 3, naming the run, having changed nothing (here: a
    module of the server code missing stays missing); once the run is over it installs (and
    repairs)."""
    import asyncpg

    from ctq import catalog

    assert run_cli("install").returncode == 0
    await insert_run(conn, 2_000_000_077, "live")
    await conn.execute("UPDATE ctq.runs SET status = 'running' WHERE run_id = 2000000077")
    driver = await asyncpg.connect(dsn)
    try:
        assert await catalog.lock_run(driver, 2_000_000_077)  # as a live coordinator holds it
        await conn.execute("DELETE FROM ctq.server_code WHERE name = 'rules'")
        proc = run_cli("install")
        assert proc.returncode == 3, proc.stderr
        assert "run 2000000077 is training now" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert await conn.fetchval("SELECT count(*) FROM ctq.server_code") == 1
    finally:
        await driver.close()
    try:
        proc = run_cli("install")
        assert proc.returncode == 0, proc.stderr
        assert await conn.fetchval("SELECT count(*) FROM ctq.server_code") == 2  # whole again
    finally:
        await conn.execute("DELETE FROM ctq.runs WHERE run_id = 2000000077; DELETE FROM ctq.packs WHERE pack_id = 'live'")


async def test_install_refuses_a_database_a_newer_ctq_installed(run_cli, conn):
    """A downgrade: an older ctq's install replaced the newer server code and ignored what it kept
    (a user trial). A database of a later catalog generation is refused, exit 3, nothing changed;
    the next command that would install (ctq train) is refused the same way."""
    from ctq.catalog import CATALOG_GENERATION

    assert run_cli("install").returncode == 0
    assert await conn.fetchval("SELECT value #>> '{}' FROM ctq.meta WHERE key = 'catalog_generation'") == \
        str(CATALOG_GENERATION)
    await conn.execute("""UPDATE ctq.meta SET value = '"a newer ctq"' WHERE key = 'install_sha'""")
    await conn.execute("UPDATE ctq.meta SET value = $1 WHERE key = 'catalog_generation'",
                       str(CATALOG_GENERATION + 1))
    try:
        proc = run_cli("install")
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.strip() == (f"error: ctq in this database was installed by a newer ctq (catalog generation "
                                       f"{CATALOG_GENERATION + 1}; this ctq's is {CATALOG_GENERATION}): use that "
                                       "version or a later one; a downgrade is not supported (restore a backup taken "
                                       "before the upgrade)"), proc.stderr
        assert await conn.fetchval("SELECT value #>> '{}' FROM ctq.meta WHERE key = 'install_sha'") == "a newer ctq"
    finally:
        await conn.execute("UPDATE ctq.meta SET value = $1 WHERE key = 'catalog_generation'", str(CATALOG_GENERATION))
        assert run_cli("install").returncode == 0


async def test_install_moves_a_state_stored_as_one_value_into_parts(run_cli, conn):
    """A catalog of an earlier ctq kept each state as one value in ctq.models.state: the upgrade
    moves it into ctq.model_states (one part), where training and export read it unchanged."""
    import numpy as np

    from conftest import stored_state
    from ctq.indb import encode_state

    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.asarray(7, np.int64)]
    await insert_run(conn, -78, "old1")
    await conn.execute("INSERT INTO ctq.models (run_id, model_id, name, architecture, hyperparameters, seed, state) "
                       "VALUES (-78, 1, 'm', '{}', '{}', 1, $1)", encode_state(arrays))
    # installed by that earlier ctq (another fingerprint): the install upgrades
    await conn.execute("""UPDATE ctq.meta SET value = '"an earlier ctq"' WHERE key = 'install_sha'""")
    try:
        proc = run_cli("install")
        assert proc.returncode == 0, proc.stderr
        assert await conn.fetchval("SELECT state FROM ctq.models WHERE run_id = -78") is None
        for got, want in zip(await stored_state(conn, -78, 1), arrays, strict=True):
            assert got.dtype == want.dtype and np.array_equal(got, want)
    finally:
        await conn.execute("DELETE FROM ctq.runs WHERE run_id = -78; DELETE FROM ctq.packs WHERE pack_id = 'old1'")


async def test_doctor_checks_keras_inside_the_server(run_cli):
    assert run_cli("install").returncode == 0  # run alone, no earlier test has installed the schema
    proc = run_cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["plpython3u"]["ok"]
    assert checks["keras in server"]["ok"] and "backend jax" in checks["keras in server"]["detail"]
    assert "ctq_compile_cache" in checks["compile cache"]["detail"]


async def test_doctor_fails_a_server_whose_keras_jax_or_numpy_is_not_the_clients():
    """A model the server trains is exported and its state read by the client's Keras: the
    versions check fails when any segment's keras, jax or numpy differs from the client's, names
    what differs where, and gives the install line that pins the client's versions (the rule
    every engine's doctor applies to its probes; a real mismatch cannot be made on one machine)."""
    from ctq.doctor import client_versions, version_check

    client = client_versions()
    same = {"keras": client["keras"], "backend": "jax", "backend_version": client["jax"], "numpy": client["numpy"]}
    assert version_check("segments", [same, same]).ok
    for key, name in (("keras", "keras"), ("backend_version", "jax"), ("numpy", "numpy")):
        check = version_check("segments", [same, {**same, key: "0.0.1"}])
        assert not check.ok, key
        assert check.detail.startswith(f"segments: {name} 0.0.1, {client[name]}") and "client:" in check.detail
        assert f"keras=={client['keras']}" in check.fix and f"jax[cpu]=={client['jax']}" in check.fix
        assert f"ml_dtypes=={client['ml_dtypes']}" in check.fix  # not compared, but kept in step


async def test_doctor_explains_an_unreachable_database(run_cli, tmp_path):
    proc = run_cli("doctor", "--dsn", f"postgresql://nobody@/nothing?host={tmp_path}&port=1")
    assert proc.returncode == 3
    assert "database" in proc.stdout and "ctq db start" in proc.stderr


@pytest.mark.parametrize("dsn, code, words", [
    # asyncpg took 99999 modulo 65536: another port, where another server may listen (a user trial)
    ("postgresql://localhost:99999/x", 3, "malformed DSN: port '99999' is not a port, 1 to 65535"),
    ("postgresql://localhost:abc/x", 3, "malformed DSN: port 'abc' is not a port"),
    # `--dsn "$PROD_DSN"` with the variable unset used the embedded database
    ("", 2, "--dsn is empty (an unset variable?)"),
])
async def test_a_dsn_that_cannot_be_meant_is_refused_before_connecting(run_cli, dsn, code, words):
    proc = run_cli("runs", "--json", "--dsn", dsn)
    assert proc.returncode == code and words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == code


async def test_load_creates_a_typed_table_and_refuses_to_overwrite(run_cli, conn, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,name\n1,2.5,x\n3,,y\n")
    proc = run_cli("load", str(csv), "--table", "public.loaded")
    assert proc.returncode == 0, proc.stderr
    types = dict(await conn.fetch("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = 'loaded'"))
    assert types == {"a": "bigint", "b": "double precision", "name": "text"}
    assert await conn.fetchval("SELECT count(*) FROM public.loaded WHERE b IS NULL") == 1
    again = run_cli("load", str(csv), "--table", "public.loaded")
    assert again.returncode == 2 and "--replace" in again.stderr
    replaced = run_cli("load", str(csv), "--table", "public.loaded", "--replace")
    assert replaced.returncode == 0


async def test_load_reports_a_ragged_csv_with_its_line(run_cli, tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("a,b\n1,2\n3\n")
    proc = run_cli("load", str(csv), "--table", "public.ragged")
    assert proc.returncode == 2
    assert "bad.csv:3" in proc.stderr


async def test_simulate_prints_both_makespans_and_the_closed_form(run_cli):
    proc = run_cli("simulate", "--models", "48", "--segments", "2,8", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["segments"] for r in rows] == [2, 8]
    for r in rows:
        assert r["bsp_makespan"] >= r["mop_makespan"] >= r["lower_bound"] - 1e-9
        assert r["mop_random_makespan"] >= r["lower_bound"] - 1e-9
        assert r["cost_gain"] == pytest.approx(r["mop_random_makespan"] / r["mop_makespan"])
        assert r["speedup"] == pytest.approx(r["theory_speedup"], rel=0.25)
    bad = run_cli("simulate", "--segments", "2,x")
    assert bad.returncode == 2


async def test_simulate_bounds_a_slow_segment_and_names_units(run_cli):
    proc = run_cli("simulate", "--segments", "4", "--segment-speed", "1,1,1,0.5", "--json")
    (row,) = json.loads(proc.stdout)
    # the half-speed segment hosts every model once: 2 x its 125 fast sub-epochs of work
    assert row["lower_bound"] == 250 and row["mop_makespan"] >= 250 and row["time_unit"] == "fast sub-epochs"
    assert row["theory_speedup"] is None  # the closed form knows no segment speeds
    text = run_cli("simulate", "--segments", "4", "--segment-speed", "1,1,1,0.5").stdout
    assert "times in fast sub-epochs" in text and "%" in text and "x" in text.splitlines()[5]
    assert "Probability that a model is fast" in " ".join(run_cli("simulate", "--help").stdout.split())


async def test_simulate_refuses_options_replay_ignores(run_cli):
    proc = run_cli("simulate", "--replay", "1", "--models", "10", "--epochs", "2")
    assert proc.returncode == 2 and "--models, --epochs" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (("--p-fast", "1.5"), "--p-fast"),
    (("--slow-ratio", "0"), "--slow-ratio"),
    (("--models", "0"), "--models"),
    (("--seed", "-1"), "--seed"),
    (("--segments", "2", "--segment-speed", "1,-1"), "--segment-speed needs 2 positive numbers"),
    (("--segments", "3", "--segment-speed", "1,1"), "--segment-speed needs 3 positive numbers"),
    # sizes no run can have: 100000 segments ran for minutes with nothing printed (a user trial)
    (("--segments", "100000", "--models", "2"), "--segments needs integers from 1 to 256"),
    (("--models", "1000000"), "--models"),
    (("--slow-ratio", "1e308"), "--slow-ratio"),
])
async def test_simulate_names_the_option_that_is_wrong(run_cli, args, words):
    proc = run_cli("simulate", *args)
    assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


async def test_resume_without_a_run_is_a_usage_error(run_cli):
    proc = run_cli("train", "--resume")
    assert proc.returncode == 2
    assert "--resume RUN_ID" in proc.stderr
    proc = run_cli("train", "--resume", "auto")
    assert proc.returncode == 2 and "--resume auto needs a GRID file" in proc.stderr
    proc = run_cli("train", "--resume", "latest")
    assert proc.returncode == 2 and "--resume takes a run id or auto, got 'latest'" in proc.stderr
    proc = run_cli("train", "--resume", "99999999999999999999")  # past a bigint: not sent to the server
    assert proc.returncode == 2 and "--resume takes a run id or auto" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (("compare", "1"), "Missing argument 'RUN_B'"),
    (("runs", "--status", "bogus"), "'bogus' is not one of"),
    (("runs", "--limit", "-1"), "--limit"),
    (("nosuchcommand",), "No such command"),
    (("models", "99999999999999999999"), "'RUN_ID': 99999999999999999999 is not an id"),
    (("export", "1", "x.keras", "--model", "9999999999"), "'--model': 9999999999 is not an id"),
    (("predict", "1", "--table", "t", "--id-column", "id", "--out", "o", "--no-such-option"), "No such option"),
])
async def test_usage_errors_are_one_line_naming_the_help(run_cli, args, words):
    """What click itself refuses is one line like every other error, with where to look, exit 2."""
    proc = run_cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0] and "--help)" in lines[0], lines


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_ctrl_c_while_the_command_loads_is_an_interruption_not_a_traceback(json_flag):
    """The `ctq` command (ctq.entry) imports its modules for 0.3-0.7 s; SIGINT then printed a
    KeyboardInterrupt traceback (a user trial). Here the interruption is raised inside that import
    (a module that raises KeyboardInterrupt stands first on the path as ctq.cli's first import)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "asyncio.py").write_text("raise KeyboardInterrupt\n")  # ctq.cli imports asyncio first
        proc = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                               "sys.argv[1:] = sys.argv[2:]; from ctq.entry import main; main()", folder,
                               "runs", *json_flag], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr == "error: interrupted\n", proc.stderr
    if json_flag:
        assert json.loads(proc.stdout) == {"status": "interrupted", "error": "interrupted", "exit_code": 130,
                                           "run_id": None}

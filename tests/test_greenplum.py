"""The Greenplum engine against a real Greenplum cluster (opt-in).

Set ``CTQ_TEST_GREENPLUM_DSN`` (a superuser on a Greenplum 6/7 or Cloudberry database with
plpython3u and Keras importable on every segment) and, if the segments need it, the server-side
``CTQ_TEST_GREENPLUM_PYTHON_PATH`` (a site-packages directory readable by the cluster's OS user).
Without the DSN this module is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict

import asyncpg
import pytest

from conftest import CountingRelay, assert_states_follow_the_recorded_hops, create_table, write_grid
from ctq.engines import GreenplumEngine
from ctq.sql import quote_ident

DSN = os.environ.get("CTQ_TEST_GREENPLUM_DSN")
PYTHON_PATH = os.environ.get("CTQ_TEST_GREENPLUM_PYTHON_PATH")
pytestmark = [
    pytest.mark.skipif(not DSN, reason="set CTQ_TEST_GREENPLUM_DSN to run the Greenplum suite"),
    pytest.mark.asyncio(loop_scope="session"),
]

GRID = """
    name: gp-{schedule}
    data: {{table: public.ctq_gp_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
           task: classification}}
    segments: 7
    models:
      - {{name: small, layers: [{{dense: 16}}]}}
      - {{name: wide, layers: [{{dense: 64}}, {{dense: 64}}]}}
    search: {{seed: 3, space: {{learning_rate: [0.01, 0.003], batch_size: [32]}}}}
    epochs: 2
    metric: val_accuracy
"""


def ctq(*args: str, role: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CTQ_DSN=as_role(role) if role else DSN, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "ctq.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def as_role(role: str) -> str:
    """The suite's DSN with another user (the cluster trusts local connections)."""
    if "gpadmin@" not in DSN:
        pytest.skip("CTQ_TEST_GREENPLUM_DSN does not name user gpadmin; cannot derive a DSN for another role")
    return DSN.replace("gpadmin@", f"{role}@")


@pytest.fixture(scope="module")
async def gp():
    """The suite's database, created (on the cluster's `postgres` database) if it does not exist yet,
    with ctq installed."""
    await ensure_database(DSN)
    install = ctq("install", *(["--python-path", PYTHON_PATH] if PYTHON_PATH else []))
    assert install.returncode == 0, install.stderr
    conn = await asyncpg.connect(DSN)
    await create_table(conn, "public.ctq_gp_src", 4000, seed=5)
    yield conn
    await conn.close()


async def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names unless it exists (connected to ``postgres``, as its user);
    whether it was created."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await admin.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await admin.close()


async def test_a_fresh_database_installs_and_doctor_shows_the_plan_before_any_pack(gp):
    """ctq install in a new database (no catalog of an earlier ctq), then ctq doctor: every check
    passes, the training query's plan (direct dispatch) shown on a probe pack that is rolled back,
    the segments' Keras, jax and numpy the client's."""
    fresh = DSN.rsplit("/", 1)[0] + "/ctqtest_fresh"
    admin = await asyncpg.connect(DSN.rsplit("/", 1)[0] + "/postgres")
    await admin.execute("DROP DATABASE IF EXISTS ctqtest_fresh")
    await admin.close()
    assert await ensure_database(fresh)
    try:
        env = dict(os.environ, CTQ_DSN=fresh, COLUMNS="200")
        install = subprocess.run([sys.executable, "-m", "ctq.cli", "install", *(["--python-path", PYTHON_PATH]
                                                                                 if PYTHON_PATH else [])],
                                 capture_output=True, text=True, env=env, timeout=600)
        assert install.returncode == 0, install.stderr
        doctor = subprocess.run([sys.executable, "-m", "ctq.cli", "doctor", "--json"], capture_output=True, text=True,
                                env=env, timeout=600)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        checks = {c["name"]: c for c in json.loads(doctor.stdout)}
        assert checks["direct dispatch"]["ok"] and "pack 0000000000000000" in checks["direct dispatch"]["detail"]
        assert "Gather Motion 1:1  (slice1; segments: 1)" in checks["direct dispatch"]["detail"]
        assert checks["versions"]["ok"], checks["versions"]
        conn = await asyncpg.connect(fresh)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = 'pack_0000000000000000'") == 0
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(DSN.rsplit("/", 1)[0] + "/postgres")
        await admin.execute("DROP DATABASE IF EXISTS ctqtest_fresh")
        await admin.close()


async def ctq_through(dsn: str, *args: str) -> tuple[int, str, str]:
    """``ctq`` with CTQ_DSN=dsn, run without blocking the event loop (a relay in it must pump)."""
    import asyncio

    env = dict(os.environ, CTQ_DSN=dsn, COLUMNS="200")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ctq.cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=900)
    return proc.returncode, out.decode(), err.decode()


async def function_calls(conn, function: str) -> dict[int, int]:
    """Calls of ``function`` (a PL/Python function of ctq's, by its signature) counted by each
    segment's own statistics (track_functions), and by the coordinator's (-1)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(
        "SELECT p.gp_segment_id AS s, coalesce(pg_stat_get_function_calls(p.oid), 0) AS n FROM gp_dist_random('pg_proc') p "
        "WHERE p.oid = $1::regprocedure UNION ALL SELECT -1, coalesce(pg_stat_get_function_calls($1::regprocedure), 0)",
        function)
    return {r["s"]: r["n"] for r in rows}


async def primaries(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM gp_segment_configuration WHERE role = 'p' AND content >= 0")


@pytest.mark.parametrize("schedule", ["mop", "bsp"])
async def test_train_on_greenplum_runs_every_hop_on_its_segment(gp, tmp_path, schedule):
    """Every hop ran on the segment it was sent to: as the training function reports from inside
    (executed_on, which record_hop checks), and as each segment's own statistics count the
    functions that the statements really run there: the training query's cache check
    (ctq.data_cached, in its row filter) as often on every segment for each of its hops and its
    warm-up, and the store of the new state (ctq.state_part) once for each part of the state of
    each of its hops; neither on the coordinator (direct dispatch: no hop runs on another segment
    or on the coordinator)."""
    database = quote_ident(await gp.fetchval("SELECT current_database()"))
    await gp.execute(f"ALTER DATABASE {database} SET track_functions = 'pl'")  # for the run's new sessions
    counted = ("ctq.data_cached(text, int)", "ctq.state_part(text, int)")
    before = {f: await function_calls(gp, f) for f in counted}
    grid = write_grid(tmp_path, GRID.format(schedule=schedule))
    proc = ctq("train", str(grid), "--json", "--schedule", schedule)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["engine"] == "greenplum"
    # the catalog says so too (ctq compare, ctq report), also of the runs earlier versions recorded as
    # 'postgres' (a user trial): the test database keeps the runs of earlier sessions
    assert {r["engine"] for r in await gp.fetch("SELECT DISTINCT engine FROM ctq.runs")} == {"greenplum"}
    segments = await primaries(gp)
    assert "segments: 7 ignored" in proc.stderr  # grid.yaml's segments do not apply on Greenplum
    hops = await gp.fetch("SELECT model_id, epoch, segment, executed_on, started_at, finished_at, rows "
                          "FROM ctq.hops WHERE run_id = $1", result["run_id"])
    assert len(hops) == 4 * 2 * segments
    # every hop ran on the segment it was sent to, as reported from inside the training function
    assert all(h["executed_on"] == h["segment"] for h in hops)
    visits = defaultdict(list)
    for h in hops:
        visits[(h["model_id"], h["epoch"])].append(h["segment"])
    assert all(sorted(v) == list(range(segments)) for v in visits.values())
    for a in hops:  # a model is never on two segments at once, a segment never runs two hops
        for b in hops:
            if a is not b and (a["model_id"] == b["model_id"] or a["segment"] == b["segment"]):
                assert a["finished_at"] <= b["started_at"] or b["finished_at"] <= a["started_at"]
    assert all(h["rows"] > 0 for h in hops)
    assert result["best_metric"] > 0.5  # 3 classes: chance is about 0.33
    on_segment = Counter(h["segment"] for h in hops)
    parts = {m: await gp.fetchval("SELECT count(*) FROM ctq.model_state_parts($1, $2)", result["run_id"], m)
             for m in {h["model_id"] for h in hops}}  # a model's state has as many parts after every hop
    parts_on = Counter()
    for h in hops:
        parts_on[h["segment"]] += parts[h["model_id"]]
    deadline = time.monotonic() + 10  # the statistics collectors report within a second or so
    while True:
        calls = {f: {s: n - before[f].get(s, 0) for s, n in (await function_calls(gp, f)).items()} for f in counted}
        checks, stores = calls["ctq.data_cached(text, int)"], calls["ctq.state_part(text, int)"]
        per_statement = checks[0] // (on_segment[0] + 1)
        if stores == {s: parts_on[s] for s in range(segments)} | {-1: 0} and per_statement >= 1 and \
                checks == {s: per_statement * (on_segment[s] + 1) for s in range(segments)} | {-1: 0}:
            break
        assert time.monotonic() < deadline, f"calls per segment (-1: the coordinator): {calls}; hops: {on_segment}"
        await asyncio.sleep(0.5)


async def test_the_source_check_with_moments_equals_the_postgresql_aggregates(gp):
    """Greenplum's source check (ctq.moments: a value's count, sum and sum of squares over the
    training and over the validation rows) gives the counts, means, variances, fingerprint and
    finiteness that PostgreSQL's statement (count, min, max, avg, var_pop) gives on the same
    cluster, and finds a NaN or an infinity in a training row and in a validation row alike."""
    from ctq.engines.base import VALIDATION_MODULUS, Engine
    from ctq.packing import profile_sql

    class PostgresStatement(GreenplumEngine):
        profile_statement = Engine.profile_statement

    await gp.execute("DROP TABLE IF EXISTS public.ctq_gp_profile; CREATE TABLE public.ctq_gp_profile AS "
                     "SELECT f1, f2 * 1e6 AS f2, CASE WHEN f3 > 0 THEN f3 END AS f3, f4, f5, f6, label "
                     "FROM public.ctq_gp_src DISTRIBUTED RANDOMLY")
    label = {"name": "label", "category": "N"}
    columns = ["f1", "f2", "f3", "f4", "f5", "f6"]

    async def profile(engine, cut):
        sql, _ = await profile_sql(gp, engine, "public.ctq_gp_profile", columns, label, False, 3, True, cut)
        assert ("ctq.moments" in sql) == (type(engine) is GreenplumEngine)
        return dict((await gp.fetch(sql))[0])

    moments, plain = await profile(GreenplumEngine(), 100_000), await profile(PostgresStatement(), 100_000)
    for key in ("n", "counts", "finite", "train_rows", "label_count", "label_fractional", "fingerprint"):
        assert moments[key] == plain[key], key
    assert moments["counts"][2] < moments["n"] and moments["finite"] == [True] * 7
    assert moments["means"] == pytest.approx(plain["means"], rel=1e-12)
    assert moments["variances"] == pytest.approx(plain["variances"], rel=1e-9)
    await gp.execute("UPDATE public.ctq_gp_profile SET f4 = 'NaN' WHERE f1 = (SELECT max(f1) FROM public.ctq_gp_profile)")
    await gp.execute("UPDATE public.ctq_gp_profile SET f5 = '-Infinity', f6 = 'Infinity' "
                     "WHERE f1 = (SELECT min(f1) FROM public.ctq_gp_profile)")
    for cut in (0, VALIDATION_MODULUS):  # every row a training row; every row a validation row
        for engine in (GreenplumEngine(), PostgresStatement()):
            assert (await profile(engine, cut))["finite"] == [True, True, True, False, False, False, True], (cut, engine)


async def test_training_query_is_direct_dispatched_with_no_motion_below_the_aggregate(gp, tmp_path):
    """The statements a hop runs (ctq.gp_hop, built by ctq.gp_train_query and gp_store_query, the
    same functions): the warm-up's and the hop's training SELECTs are a direct dispatch with no
    Motion below the aggregate; the INSERT of the new state's parts has no Motion at all (it runs
    on that segment, in the process that trained, and writes there), under ORCA and the planner."""
    grid = write_grid(tmp_path, GRID.format(schedule="plan"))
    assert ctq("train", str(grid), "--json").returncode == 0
    pack_id = await gp.fetchval("SELECT pack_id FROM ctq.packs p JOIN ctq.runs r USING (pack_id) "
                                "ORDER BY r.run_id DESC LIMIT 1")
    for optimizer in ("on", "off"):
        await gp.execute(f"SET optimizer = {optimizer}")
        for segment in range(await primaries(gp)):
            key = await gp.fetchval("SELECT ctq.segment_key($1, $2)", pack_id, segment)
            assert await gp.fetchval(f"SELECT count(DISTINCT gp_segment_id) FROM ctq_data.pack_{pack_id} "
                                     f"WHERE dist_key = {key}") == 1
            query = await gp.fetchval("SELECT ctq.gp_train_query($1, $2, $3, 'cached', false)", pack_id, segment, key)
            plan = [r[0] for r in await gp.fetch("EXPLAIN " + query, "{}")]
            assert plan[0].startswith("Gather Motion 1:1  (slice1; segments: 1)"), plan
            assert not any("Motion" in line for line in plan[1:]), plan
            assert any("Aggregate" in line for line in plan), plan
            await gp.execute("CREATE TEMP TABLE IF NOT EXISTS ctq_moved_state (dist_key int, array_index int, "
                             "byte_offset int8, data bytea) DISTRIBUTED BY (dist_key)")
            if optimizer == "off":  # (as ctq.gp_hop plans a hop's training: ORCA would send it everywhere)
                hop = await gp.fetchval("SELECT ctq.gp_train_query($1, $2, $3, 'cached', true)", pack_id, segment, key)
                plan = [r[0] for r in await gp.fetch("EXPLAIN " + hop, "{}", 1, 1, 0)]
                assert plan[0].startswith("Gather Motion 1:1  (slice1; segments: 1)"), plan
                assert not any("Motion" in line for line in plan[1:]), plan
            store = await gp.fetchval("SELECT ctq.gp_store_query('hop_states', $1, $2, $3)", pack_id, segment, key)
            plan = [r[0] for r in await gp.fetch("EXPLAIN " + store, 1, 1, 0, "1", 3)]
            assert plan[0].startswith("Insert"), plan
            assert not any("Motion" in line for line in plan), plan  # in the process that trained
            rows = await gp.fetchval(f"SELECT count(*) FROM ctq_data.pack_{pack_id} WHERE gp_segment_id = {segment} "
                                     f"AND segment = {segment}")
            assert rows >= 2  # its training buffers and its marker live on that segment
    await gp.execute("RESET optimizer")


async def coordinator_log_end(conn) -> dict[str, int]:
    """The coordinator's log files (csv) and their sizes now: where :func:`coordinator_log_since`
    starts reading."""
    rows = await conn.fetch("SELECT f, (pg_stat_file(current_setting('log_directory') || '/' || f)).size AS size "
                            "FROM pg_ls_dir(current_setting('log_directory')) f WHERE f LIKE '%.csv'")
    return {r["f"]: r["size"] for r in rows}


async def coordinator_log_since(conn, end: dict[str, int]) -> list[list[str]]:
    """The coordinator's log entries (csv rows) written since :func:`coordinator_log_end` gave ``end``."""
    import csv
    import io

    entries = []
    for name, size in sorted((await coordinator_log_end(conn)).items()):
        start = end.get(name, 0)
        if size > start:
            text = await conn.fetchval("SELECT pg_read_file(current_setting('log_directory') || '/' || $1, $2, $3)",
                                       name, start, size - start)
            entries += list(csv.reader(io.StringIO(text)))
    return entries


@pytest.mark.parametrize("optimizer", ["on", "off"])
async def test_record_hop_is_dispatched_to_the_runs_segment_alone(gp, tmp_path, optimizer):
    """Every statement ctq.record_hop runs in a training (a hop's row, its epoch's sum, row and model
    update) is dispatched to one segment, the run's, whatever the session's optimizer (ORCA or the
    planner), also past the 5 calls a session makes before its cached plans may turn generic (a
    generic plan of the epoch's sum went to every segment): as the coordinator logs each dispatch
    of the training's sessions (test_print_direct_dispatch_info, with log_min_messages = info the
    message and the PL/pgSQL context of its statement are logged). Greenplum sent the epoch row's
    INSERT to every segment before (issue 23)."""
    options = f"optimizer={optimizer}&test_print_direct_dispatch_info=on&log_min_messages=info"
    dsn = DSN + ("&" if "?" in DSN else "?") + options
    grid = write_grid(tmp_path, GRID.format(schedule=f"dispatch-{optimizer}").replace("epochs: 2", "epochs: 4"))
    end = await coordinator_log_end(gp)
    proc = subprocess.run([sys.executable, "-m", "ctq.cli", "train", str(grid), "--json", "-q"], capture_output=True,
                          text=True, env=dict(os.environ, CTQ_DSN=dsn), timeout=900)
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    hops = await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
    epochs = await gp.fetchval("SELECT count(*) FROM ctq.epochs WHERE run_id = $1", run_id)
    assert epochs == 4 * 4 and hops == epochs * await primaries(gp)
    # (message, then the statement's context, innermost function first: csvlog's columns 19 and 24)
    dispatched = [(e[18], e[23]) for e in await coordinator_log_since(gp, end)
                  if len(e) > 23 and "Dispatch command to" in e[18]]
    recorded = [(message, context) for message, context in dispatched
                if context.split(" line ")[0].endswith("ctq.record_hop(bigint,integer,integer,integer,boolean,"
                                                       "ctq.hop_result,integer)")]
    statements = Counter(context.split('"')[1].split()[0] for _, context in recorded)
    assert all("Dispatch command to SINGLE content" in message for message, _ in recorded), \
        Counter(m for m, _ in recorded if "SINGLE" not in m)
    # each hop's row (INSERT) and model (UPDATE); each epoch's sum (SELECT), row (INSERT) and model
    assert statements == {"INSERT": hops + epochs, "UPDATE": hops, "SELECT": epochs}, statements


async def test_states_lie_on_the_segment_of_the_last_hop_and_never_pass_the_client(gp, tmp_path):
    """After a run, each model's state (its checkpoint) lies on the segment its last hop ran on, whole;
    no working state is left. The client's connections carry no state: counted at a relay in front
    of the coordinator, the bytes either way over the whole run are a fraction of one model's state."""
    grid = write_grid(tmp_path, GRID.format(schedule="where").replace("{name: wide, layers: [{dense: 64}, {dense: 64}]}",
                                                                      "{name: wide, layers: [{dense: 512}, {dense: 512}]}"))
    async with CountingRelay(DSN) as relay:
        code, out, err = await ctq_through(relay.dsn, "train", str(grid), "--json", "-q")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    last = {r["model_id"]: r["segment"] for r in await gp.fetch(
        "SELECT DISTINCT ON (model_id) model_id, segment FROM ctq.hops WHERE run_id = $1 "
        "ORDER BY model_id, epoch DESC, finished_at DESC", run_id)}
    where = await gp.fetch("SELECT model_id, gp_segment_id AS segment, count(*) FILTER (WHERE array_index = -1) AS headers, "
                           "sum(length(data))::int8 AS bytes FROM ctq_catalog.model_states WHERE run_id = $1 "
                           "GROUP BY 1, 2", run_id)
    assert {r["model_id"]: r["segment"] for r in where} == last and all(r["headers"] == 1 for r in where), where
    assert await gp.fetchval("SELECT count(*) FROM ctq_catalog.hop_states WHERE run_id = $1", run_id) == 0
    largest = max(r["bytes"] for r in where)
    hops = await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
    assert largest > 1_000_000  # 512 x 512 x 3 (weights, two Adam moments) x 4 bytes
    assert relay.bytes_in + relay.bytes_out < largest, (relay.bytes_in, relay.bytes_out, largest, hops)


async def test_mop_state_equals_standalone_keras_on_greenplum(gp, tmp_path):
    """The whole training state hops between real segments: the final weights and optimizer slots
    equal a plain Keras run over the same segments in the same order."""
    from test_mop_equals_sequential import GRID as SEQ_GRID

    grid = write_grid(tmp_path, SEQ_GRID.format(table="public.ctq_gp_src"))
    proc = ctq("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    await assert_states_follow_the_recorded_hops(gp, json.loads(proc.stdout)["run_id"], await primaries(gp))


@pytest.mark.skipif(not os.environ.get("CTQ_TEST_LARGE_STATES"),
                    reason="set CTQ_TEST_LARGE_STATES=1 to train models whose state is over 1 GB (minutes, GBs of memory)")
async def test_a_state_over_1_gb_on_greenplum(gp, tmp_path):
    """tests/test_large_states.py on the cluster: two 1.2 GB states hop between real segments (each
    hop moves one segment to segment), survive kill -9 of the coordinator, equal plain Keras, and
    are scored where they lie."""
    import asyncio
    import signal

    from test_large_states import large_grid
    from test_mop_equals_sequential import assert_run_equals_standalone

    await create_table(gp, "public.ctq_gp_large_src", 800, seed=21)
    grid = write_grid(tmp_path, large_grid("public.ctq_gp_large_src", "gp-large-state"))
    env = dict(os.environ, CTQ_DSN=DSN)
    proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", "train", str(grid), "--json", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    run_id = None
    for _ in range(3000):
        run_id = await gp.fetchval("SELECT max(run_id) FROM ctq.runs WHERE name = 'gp-large-state' "
                                   "AND status = 'running'")  # (not an earlier run of this test)
        if run_id and await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) >= 1:
            break
        await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    segments = await primaries(gp)
    assert await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) < 4 * segments
    resumed = ctq("train", "--resume", str(run_id), "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    sizes = await gp.fetch("SELECT model_id, count(DISTINCT gp_segment_id) AS segments, "
                           "sum(length(data))::int8 AS bytes FROM ctq_catalog.model_states WHERE run_id = $1 "
                           "GROUP BY model_id", run_id)
    assert len(sizes) == 2 and all(s["bytes"] > 2**30 and s["segments"] == 1 for s in sizes), sizes
    if segments == 2:  # (assert_run_equals_standalone knows two segments)
        await assert_run_equals_standalone(gp, run_id)
    scored = ctq("evaluate", str(run_id), "--table", "public.ctq_gp_large_src", "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["rows"] == 800


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT"])
async def test_stop_and_resume_on_greenplum(gp, tmp_path, stop):
    """kill -9 (or Ctrl-C: exit 130, run 'interrupted', no training query left on the cluster) of
    the coordinator mid-run, then --resume: the same run finishes, every hop recorded once (the
    hops' primary key promises no more) and none trained twice or lost: each model ends in the
    state plain Keras reaches over its recorded hops."""
    import asyncio
    import signal
    import time

    name = f"gp-resume-{stop.lower()}"
    grid = write_grid(tmp_path, GRID.format(schedule="resume").replace("epochs: 2", "epochs: 4")
                      .replace("name: gp-resume", f"name: {name}"))
    env = dict(os.environ, CTQ_DSN=DSN)
    proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", "train", str(grid), "--json", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    run_id = None
    for _ in range(600):
        run_id = await gp.fetchval("SELECT max(run_id) FROM ctq.runs WHERE name = $1 AND status = 'running'", name)
        if run_id and await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) >= 4:
            break
        await asyncio.sleep(0.2)
    assert run_id is not None
    sent = time.monotonic()
    proc.send_signal(getattr(signal, stop))
    proc.wait(timeout=60)
    if stop == "SIGINT":
        assert proc.returncode == 130 and time.monotonic() - sent < 15
        assert await gp.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "interrupted"
        assert await gp.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 "
                                 "AND state = 'active'", f"ctq run {run_id} %") == 0
    resumed = ctq("train", "--resume", str(run_id), "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id
    segments = await primaries(gp)
    rows = await gp.fetch("SELECT model_id, epoch, segment, executed_on FROM ctq.hops WHERE run_id = $1", run_id)
    assert len(rows) == 4 * 4 * segments
    assert len({(r["model_id"], r["epoch"], r["segment"]) for r in rows}) == len(rows)
    assert all(r["executed_on"] == r["segment"] for r in rows)
    await assert_states_follow_the_recorded_hops(gp, run_id, await primaries(gp))


async def test_an_administrator_role_trains_on_greenplum(gp, tmp_path):
    """Roles and grants as on PostgreSQL: a non-superuser in ctq_admin, with SELECT on the source,
    packs and trains, and sees every run (the installer's too)."""
    role = "ctq_gp_admin"  # roles are cluster-wide: kept from an earlier run, in any database
    if await gp.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role):
        await gp.execute(f"REVOKE ctq_admin FROM {role}")
    else:
        await gp.execute(f"CREATE ROLE {role} LOGIN")
    source = f"ctq_gp_admin_src_{os.getpid()}"  # never packed before: the role packs it itself
    await gp.execute(f"CREATE TABLE public.{source} AS SELECT * FROM public.ctq_gp_src LIMIT 1500")
    await gp.execute(f"GRANT SELECT ON public.{source} TO {role}")
    assert ctq("grant", role, "--admin").returncode == 0
    grid = write_grid(tmp_path, GRID.format(schedule="admin").replace("ctq_gp_src", source))
    proc = ctq("train", str(grid), "--json", "-q", role=role)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and not result["pack_reused"]
    assert await gp.fetchval("SELECT run_by FROM ctq.runs WHERE run_id = $1", result["run_id"]) == role
    assert await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1 AND executed_on = segment",
                             result["run_id"]) == 4 * 2 * await primaries(gp)
    assert await gp.fetchval("SELECT p.packed_by FROM ctq.packs p JOIN ctq.runs r USING (pack_id) "
                             "WHERE r.run_id = $1", result["run_id"]) == role
    admin = await asyncpg.connect(as_role(role))
    try:
        assert await admin.fetchval("SELECT count(*) FROM ctq.runs") == await gp.fetchval(
            "SELECT count(*) FROM ctq_catalog.runs")
    finally:
        await admin.close()
    pack_id = await gp.fetchval("SELECT pack_id FROM ctq.runs WHERE run_id = $1", result["run_id"])
    await gp.execute(f"DROP TABLE public.{source}")
    # the installer (a superuser) still sees the pack of a dropped source: `ctq packs gc` must not
    # take its table for an orphan and leave the catalog row behind
    assert await gp.fetchval("SELECT count(*) FROM ctq.packs WHERE pack_id = $1", pack_id) == 1


async def trained_with_pack_stats(gp, grid) -> tuple[dict, dict]:
    """``ctq train GRID --json``'s result, and its pack's statistics (ctq.packs.stats)."""
    proc = ctq("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    stats = json.loads(await gp.fetchval("SELECT p.stats FROM ctq.packs p JOIN ctq.runs r USING (pack_id) "
                                         "WHERE r.run_id = $1", result["run_id"]))
    return result, stats


async def test_a_wide_table_packs_every_row_and_trains_on_greenplum(gp, tmp_path):
    """A table of 300 feature columns (packed by the planner from 64 on: pack_wide.sql) holds every
    row once in its pack, and a model learns its label (that of one column), as on PostgreSQL."""
    cols = ", ".join(f"(((g * {7919 + 2 * i} + {104729 * i}) % 1009) / 1009.0)::float4 AS c{i}" for i in range(300))
    await gp.execute("DROP TABLE IF EXISTS public.ctq_gp_wide")
    await gp.execute(f"CREATE TABLE public.ctq_gp_wide AS SELECT g AS id, {cols}, "
                     "(((g * 7919) % 1009) / 1009.0 > 0.5)::int AS label FROM generate_series(1, 3000) g "
                     "DISTRIBUTED BY (id)")
    grid = write_grid(tmp_path, """
        name: gp-wide
        data: {table: public.ctq_gp_wide, features: all, exclude: [id], label: label, task: classification}
        models: [{name: lin, layers: [{dense: 16, activation: relu}]}]
        search: {space: {learning_rate: [0.01], batch_size: [32]}}
        epochs: 4
        metric: val_accuracy
    """)
    result, stats = await trained_with_pack_stats(gp, grid)
    assert result["best_metric"] > 0.9, result
    assert stats["input_dim"] == 300 and stats["train_rows"] + stats["validation_rows"] == 3000, stats
    pack = await gp.fetchval("SELECT table_name FROM ctq.runs r JOIN ctq.packs p USING (pack_id) "
                             "WHERE r.run_id = $1", result["run_id"])
    packed = await gp.fetchrow(f"SELECT sum(rows) FILTER (WHERE segment >= 0 AND bucket >= 0) AS train, "
                               f"sum(rows) FILTER (WHERE segment = -1) AS validation FROM {pack}")
    assert (packed["train"], packed["validation"]) == (stats["train_rows"],
                                                       stats["validation_rows"] * await primaries(gp)), packed


async def test_predict_and_evaluate_on_greenplum(gp, tmp_path):
    """Each segment scores its own rows (a direct-dispatched targeted query over its staged rows, run
    on that segment as reported from inside); the predictions equal the exported .keras model's."""
    import numpy as np

    from ctq.engines.base import ScoreSpec
    from ctq.indb import import_keras

    grid = write_grid(tmp_path, GRID.format(schedule="predict").replace("epochs: 2", "epochs: 1"))
    proc = ctq("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    run_id = str(json.loads(proc.stdout)["run_id"])
    await gp.execute("DROP TABLE IF EXISTS public.ctq_gp_holdout; CREATE TABLE public.ctq_gp_holdout AS "
                     "SELECT (row_number() OVER ())::int8 AS id, * FROM public.ctq_gp_src LIMIT 600 "
                     "DISTRIBUTED BY (id)")
    proc = ctq("predict", run_id, "--table", "public.ctq_gp_holdout", "--id-column", "id", "--out",
               "public.ctq_gp_pred", "--proba", "--replace", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["segments"] == await primaries(gp)
    path = tmp_path / "gp.keras"
    assert ctq("export", run_id, str(path)).returncode == 0, "export failed"
    rows = await gp.fetch("SELECT h.*, p.prediction, p.probabilities FROM public.ctq_gp_holdout h "
                          "JOIN public.ctq_gp_pred p USING (id) ORDER BY id")
    assert len(rows) == 600
    x = np.array([[r[f"f{i}"] for i in range(1, 9)] for r in rows], np.float32)
    probs = import_keras().saving.load_model(path).predict(x, verbose=0)
    np.testing.assert_allclose(np.array([r["probabilities"] for r in rows]), probs, rtol=1e-4, atol=1e-6)
    assert [r["prediction"] for r in rows] == [int(i) for i in np.argmax(probs, axis=1)]
    proc = ctq("evaluate", run_id, "--table", "public.ctq_gp_holdout", "--json")
    assert proc.returncode == 0, proc.stderr
    y = np.array([r["label"] for r in rows])
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(float(np.mean(np.argmax(probs, axis=1) == y)))
    engine = GreenplumEngine()  # the staged scoring query of every segment is direct-dispatched
    spec = ScoreSpec(source="public.ctq_gp_holdout", is_table=True, id="t.id", id_type="int8",
                     x_bytes="t.f1::text::bytea", y_bytes="NULL::bytea", segments=await primaries(gp),
                     stage='"ctq_data"."score_00000000000000f1"')
    await gp.execute(f"DROP TABLE IF EXISTS {spec.stage}")
    await engine.prepare_scoring(gp, spec, int(run_id), 1, ["{}"] * spec.segments)
    try:
        parts = await gp.fetchval("SELECT count(*) FROM ctq.model_state_parts($1, 1)", int(run_id))
        for segment in range(spec.segments):
            plan = [r[0] for r in await gp.fetch("EXPLAIN " + engine.score_query(spec, segment))]
            assert plan[0].startswith("Gather Motion 1:1  (slice1; segments: 1)"), plan
            assert not any("Motion" in line for line in plan[1:]), plan
            # its header row and a copy of the model's state (every part) live on it
            assert await gp.fetchval(f"SELECT count(*) FROM {spec.stage} WHERE gp_segment_id = {segment} "
                                     "AND params IS NOT NULL") == 1
            assert await gp.fetchval(f"SELECT count(*) FROM {spec.stage} WHERE gp_segment_id = {segment} "
                                     "AND part IS NOT NULL") == parts > 1
    finally:
        await engine.finish_scoring(gp, spec)


async def test_categorical_features_and_val_auc_on_greenplum(gp, tmp_path):
    """The vocabulary query, the jsonb lookup that encodes a category (each segment packing its
    rows) and a ranking metric on Greenplum 6's SQL (PostgreSQL 9.4)."""
    await gp.execute("DROP TABLE IF EXISTS public.ctq_gp_cat; CREATE TABLE public.ctq_gp_cat AS "
                     "SELECT g::float8 / 1000 AS x, (ARRAY['a', 'b', 'c', NULL])[1 + g % 4] AS kind, "
                     "g % 4 = 1 AS label FROM generate_series(1, 3000) g")
    grid = write_grid(tmp_path, """
        data: {table: public.ctq_gp_cat, features: [x, {column: kind, encoding: one_hot}], label: label,
               task: classification}
        models: [{name: m, layers: [{dense: 8}]}]
        search: {space: {learning_rate: [0.05]}}
        epochs: 1
        metric: val_auc
    """)
    out, stats = await trained_with_pack_stats(gp, grid)
    assert out["best_metric"] > 0.95, out
    assert stats["categories"]["kind"]["values"] == ["a", "b", "c"] and stats["input_dim"] == 4
    # predict encodes the category on each segment; evaluate sums the segments' AUC counts
    evaluated = ctq("evaluate", str(out["run_id"]), "--table", "public.ctq_gp_cat", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    doc = json.loads(evaluated.stdout)
    assert doc["rows"] == 3000 and doc["auc"] > 0.95 and doc["accuracy"] > 0.9, doc


async def test_asha_and_cost_aware_scheduling_on_greenplum(gp, tmp_path):
    """The search's catalog (ctq.decisions, status stopped) and its SQL on Greenplum 6: an ASHA run
    stops models at its rung, records each decision, and the stopped ones never train again."""
    grid = write_grid(tmp_path, """
        name: gp-asha
        data: {table: public.ctq_gp_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
               task: classification}
        models: [{name: small, layers: [{dense: 8}]}]
        search: {method: asha, seed: 2, max_epochs: 2, reduction_factor: 3,
                 space: {learning_rate: [0.00001, 0.003, 0.03], batch_size: [32]}}
        metric: val_accuracy
    """)
    proc = ctq("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    decisions = await gp.fetch("SELECT model_id, decision FROM ctq.decisions WHERE run_id = $1 ORDER BY seq", run_id)
    assert len(decisions) == 3 and {d["decision"] for d in decisions} == {"promote", "stop"}
    stopped = {d["model_id"] for d in decisions if d["decision"] == "stop"}
    assert await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1 AND epoch > 0 AND model_id = ANY($2)",
                             run_id, list(stopped)) == 0
    assert {r["status"] for r in await gp.fetch("SELECT status FROM ctq.models WHERE run_id = $1 AND model_id = "
                                                "ANY($2)", run_id, list(stopped))} == {"stopped"}


# Analysts (ctq_user) on Greenplum 6, which has no row-level security: the tables are in ctq_catalog,
# analysts read filtering views and write through functions that check them (greenplum/row_security.sql).
ALICE, BOB, CAROL, TEAM = "ctq_gp_alice", "ctq_gp_bob", "ctq_gp_carol", "ctq_gp_team"
ANALYST_GRID = """
    name: gp-analyst
    data: {table: public.ctq_gp_analyst_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
           task: classification}
    models: [{name: small, layers: [{dense: 8}]}]
    search: {space: {learning_rate: [0.01], batch_size: [64]}}
    epochs: 2
    metric: val_accuracy
"""


@pytest.fixture(scope="module")
async def analysts(gp, tmp_path_factory):
    """alice and bob (ctq grant: ctq_user) may SELECT the source, carol (ctq_user too) may not; bob
    is in role ctq_gp_team. alice has trained one run (packing the source herself)."""
    for role in (ALICE, BOB, CAROL, TEAM):  # cluster-wide: they may exist from an earlier run
        if not await gp.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role):
            await gp.execute(f"CREATE ROLE {role} {'NOLOGIN' if role == TEAM else 'LOGIN'}")
    await gp.execute(f"REVOKE {TEAM} FROM {ALICE}, {CAROL}")
    await gp.execute(f"GRANT {TEAM} TO {BOB}")
    await gp.execute("DROP TABLE IF EXISTS public.ctq_gp_analyst_src")
    await gp.execute("CREATE TABLE public.ctq_gp_analyst_src AS SELECT * FROM public.ctq_gp_src LIMIT 2000")
    await gp.execute(f"GRANT SELECT ON public.ctq_gp_analyst_src TO {ALICE}, {BOB}")
    for role in (ALICE, BOB, CAROL):
        proc = ctq("grant", role)
        assert proc.returncode == 0, proc.stderr
    grid = write_grid(tmp_path_factory.mktemp("analysts"), ANALYST_GRID)
    proc = ctq("train", str(grid), "--json", "-q", role=ALICE)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    pack = await gp.fetchval("SELECT pack_id FROM ctq_catalog.runs WHERE run_id = $1", run["run_id"])
    return {"run": run["run_id"], "pack": pack, "grid": grid, "hops": run["hops"]}


async def run_rows(gp, run_id) -> str:
    """A digest of everything recorded about a run (to show that nothing changed)."""
    parts = []
    for table in ("runs", "models", "hops", "epochs", "decisions"):
        parts.append(await gp.fetchval(f"SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                                       f"FROM ctq_catalog.{table} t WHERE run_id = $1", run_id))
    return ":".join(parts)


async def test_analyst_trains_resumes_and_lists_its_own_runs_on_greenplum(gp, analysts, tmp_path):
    run_id = analysts["run"]
    assert analysts["hops"] == 2 * await primaries(gp)
    assert await gp.fetchval("SELECT run_by FROM ctq.runs WHERE run_id = $1", run_id) == ALICE
    assert await gp.fetchval("SELECT packed_by FROM ctq.packs WHERE pack_id = $1", analysts["pack"]) == ALICE
    # as if the coordinator had died during the last epoch: the hops of epoch 1 unrecorded, the
    # states as they were after epoch 0 (the weights do not matter here: only their hop count)
    await gp.execute("DELETE FROM ctq_catalog.epochs WHERE run_id = $1 AND epoch = 1", run_id)
    await gp.execute("DELETE FROM ctq_catalog.hops WHERE run_id = $1 AND epoch = 1", run_id)
    kept = await gp.fetchval("SELECT count(*)::int FROM ctq_catalog.hops WHERE run_id = $1", run_id)
    await gp.execute('UPDATE ctq_catalog.model_states SET hops = $2::int, data = CASE WHEN array_index = -1 THEN '
                     'convert_to(regexp_replace(convert_from(data, \'UTF8\'), \'"hops": [0-9]+\', \'"hops": \' || $2::int::text), '
                     '\'UTF8\') ELSE data END WHERE run_id = $1', run_id, kept)
    await gp.execute("UPDATE ctq_catalog.runs SET status = 'interrupted' WHERE run_id = $1", run_id)
    await gp.execute("UPDATE ctq_catalog.models SET status = 'training' WHERE run_id = $1", run_id)
    proc = ctq("train", "--resume", str(run_id), "--json", "-q", role=ALICE)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hops"] == await primaries(gp)
    listed = json.loads(ctq("runs", "--json", role=ALICE).stdout)
    assert run_id in {r["run_id"] for r in listed} and {r["run_by"] for r in listed} == {ALICE}
    models = ctq("models", str(run_id), "--json", role=ALICE)
    assert models.returncode == 0 and len(json.loads(models.stdout)) == 1
    for args in (("report", str(run_id), "--out", str(tmp_path / "run.html")),
                 ("export", str(run_id), str(tmp_path / "m.keras")),
                 ("evaluate", str(run_id), "--table", "public.ctq_gp_analyst_src")):
        proc = ctq(*args, role=ALICE)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.keras").exists()


def hostile(run_id: int, pack_id: str, source: str) -> list[tuple[str, str]]:
    """(role, statement): what bob (an analyst who can read the source) and carol (who cannot) try
    against alice's run and pack, and against the server code. Every one must be refused."""
    hop = "ROW(NULL, 0, 0, 1, 0, 0, 0, now(), now(), 0, NULL, NULL)::ctq.hop_result"
    bad = "$$'; DROP TABLE ctq_catalog.runs; --$$"
    cases = [(BOB, f"SELECT count(*) FROM ctq_catalog.{t}")
             for t in ("runs", "models", "hops", "epochs", "decisions", "packs")]
    cases += [
        (BOB, f"INSERT INTO ctq.hops (run_id, model_id, epoch, segment, started_at, finished_at, compute_seconds, "
              f"rows) VALUES ({run_id}, 1, 9, 0, now(), now(), 0, 0)"),
        (BOB, "INSERT INTO ctq.runs (name, status, config, config_fingerprint, source_table, pack_id, segments, "
              f"epochs, metric, metric_mode, run_by) VALUES ('x', 'running', '{{}}', 'x', 'x', '{pack_id}', 1, 1, "
              f"'loss', 'min', '{ALICE}')"),
        (BOB, f"UPDATE ctq.models SET state = NULL WHERE run_id = {run_id}"),
        (BOB, f"UPDATE ctq.runs SET run_by = '{BOB}' WHERE run_id = {run_id}"),
        (BOB, f"DELETE FROM ctq.hops WHERE run_id = {run_id}"),
        (BOB, "DELETE FROM ctq.runs"),
        (BOB, "INSERT INTO ctq.packs (pack_id, source_table, source_fingerprint, settings, table_name, stats) "
              "VALUES ('00000000000000aa', 'x', 'x', '{}', 'pg_catalog.pg_authid', '{}')"),
        (BOB, f"SELECT ctq.heartbeat({run_id})"),
        (BOB, f"SELECT ctq.resume_run({run_id})"),
        (BOB, f"SELECT ctq.finish_run({run_id}, 'failed', 'x')"),
        (BOB, f"SELECT ctq.finish_models({run_id}, 'failed')"),
        (BOB, f"SELECT ctq.model_status({run_id}, 1, 'failed', {bad})"),
        (BOB, f"SELECT ctq.insert_model({run_id}, 99, {bad}, '{{}}', '{{}}', 0)"),
        (BOB, f"SELECT ctq.record_decision({run_id}, 1, 0, 0, 0, 'loss', 0, 'stop', 'x')"),
        (BOB, f"SELECT ctq.share_run({run_id}, ARRAY['{BOB}'], false)"),
        (BOB, f"SELECT ctq.warm_start({run_id}, {run_id}, ARRAY[1], 1)"),
        (BOB, f"SELECT ctq.warm_start(NULL, {run_id}, ARRAY[1], 1)"),
        (BOB, f"SELECT * FROM ctq.gp_hop({run_id}, 1, 9, 0, false, false, 0, '{{}}', 'cached', ARRAY[0, 1])"),
        (BOB, f"SELECT * FROM ctq.model_state_parts({run_id}, 1)"),
        (BOB, f"SELECT * FROM ctq.restore_checkpoints({run_id}, 2)"),
        (BOB, "SELECT count(*) FROM ctq_catalog.model_states"),
        (BOB, "SELECT count(*) FROM ctq_catalog.hop_states"),
        (BOB, f"SELECT ctq.record_hop({run_id}, 1, 9, 0, false, {hop})"),
        (BOB, f"SELECT ctq_catalog.check_change({run_id})"),
        (BOB, f"SELECT ctq.create_run('x', 'mop', '{{}}', 'x', 'x', {bad}, 1, 1, 'loss', 'min', 'h', '{{}}', 0, 1)"),
        (BOB, "SELECT ctq.insert_pack('00000000000000aa', 'x', 'x', '{}', 'pg_catalog.pg_authid', '{}', "
              f"'public', '{source}')"),
        (BOB, f"SELECT ctq.insert_pack({bad}, 'x', 'x', '{{}}', 'ctq_data.pack_x', '{{}}', 'public', '{source}')"),
        (BOB, "SELECT ctq.insert_pack('00000000000000ab', 'x', 'x', '{}', 'ctq_data.pack_00000000000000ab', '{}', "
              "'ctq_catalog', 'runs')"),
        (BOB, "SELECT ctq.insert_pack('00000000000000ac', 'x', 'x', '{}', 'ctq_data.pack_00000000000000ac', '{}', "
              "'pg_catalog', 'pg_authid')"),
        (BOB, "SELECT ctq.insert_pack('00000000000000ad', 'x', 'x', '{}', 'ctq_data.pack_00000000000000ad', '{}', "
              "'public; DROP TABLE ctq_catalog.runs', 'x')"),
        (BOB, f"SELECT ctq.use_pack({bad})"),
        (BOB, "SELECT ctq.data_cached($$x'); DROP TABLE ctq_catalog.runs; --$$, 0)"),
        (BOB, "SELECT ctq.path_status('/etc')"),
        (BOB, "UPDATE ctq.server_code SET source = 'import os'"),
        (BOB, "INSERT INTO ctq.meta VALUES ('python_path', '[\"/tmp\"]')"),
        (BOB, "DELETE FROM ctq.meta"),
        (BOB, "CREATE FUNCTION ctq.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
        (BOB, "CREATE OR REPLACE VIEW ctq.runs AS SELECT * FROM ctq_catalog.runs"),
        (BOB, "CREATE OR REPLACE VIEW ctq.runs AS SELECT 1 AS run_id"),
        (BOB, "ALTER VIEW ctq.runs SET (security_barrier = false)"),
        (BOB, "CREATE OR REPLACE FUNCTION ctq.can_read_run(text, text[]) RETURNS boolean LANGUAGE sql "
              "AS 'SELECT true'"),
        (CAROL, f"SELECT ctq.use_pack('{pack_id}')"),
        (CAROL, f"SELECT * FROM ctq_data.pack_{pack_id}"),
        (CAROL, f"SELECT ctq.create_run('x', 'mop', '{{}}', 'x', 'x', '{pack_id}', 1, 1, 'loss', 'min', 'h', '{{}}', "
                "0, 1)"),
        (CAROL, "SELECT ctq.insert_pack('00000000000000ae', 'x', 'x', '{}', 'ctq_data.pack_00000000000000ae', '{}', "
                f"'public', '{source}')"),
    ]
    return cases


async def test_second_analyst_sees_and_changes_nothing_of_the_first_on_greenplum(gp, analysts):
    """bob sees none of alice's runs through the views (a leaky function of his own in the WHERE
    clause sees none of her rows either), and every write he or carol tries on her run, her pack or
    the server code is refused (hostile()); nothing of hers changed."""
    run_id, pack_id = analysts["run"], analysts["pack"]
    before, code = await run_rows(gp, run_id), await gp.fetchval("SELECT md5(string_agg(source, '')) "
                                                                  "FROM ctq.server_code")
    assert "no run with id" in ctq("models", str(run_id), role=BOB).stderr
    bob = await asyncpg.connect(as_role(BOB))
    notices = []
    bob.add_log_listener(lambda _conn, message: notices.append(message.message))
    try:
        for view in ("runs", "models", "hops", "epochs", "decisions", "leaderboard", "learning_curves",
                     "segment_utilization"):
            assert await bob.fetchval(f"SELECT count(*) FROM ctq.{view} WHERE run_id = $1", run_id) == 0, view
        assert await bob.fetchval("SELECT count(*) FROM ctq.runs WHERE run_by <> $1", BOB) == 0
        leak = f"ctq_data.leak_{os.getpid()}"
        await bob.execute(f"CREATE FUNCTION {leak}(bigint, text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 "
                          "AS $f$BEGIN RAISE NOTICE 'leak % %', $1, $2; RETURN true; END$f$")
        try:  # bob's own runs (from earlier tests) only
            own = await bob.fetchval("SELECT count(*) FROM ctq.runs")
            assert await bob.fetchval(f"SELECT count(*) FROM ctq.runs r WHERE {leak}(r.run_id, r.run_by)") == own
            await bob.fetchval(f"SELECT count(*) FROM ctq.models m WHERE {leak}(m.run_id, m.name)")
        finally:
            await bob.execute(f"DROP FUNCTION {leak}(bigint, text)")
        leaked = [n for n in notices if n.startswith(f"leak {run_id} ") or ALICE in n]
        assert not leaked and all(n.split()[2] == BOB for n in notices[:own]), notices
    finally:
        await bob.close()
    cases = hostile(run_id, pack_id, "ctq_gp_analyst_src")
    refused = []
    for role, sql in cases:
        conn = await asyncpg.connect(as_role(role))
        try:
            with pytest.raises(asyncpg.PostgresError) as err:
                await conn.execute(sql)
            refused.append(err.value.sqlstate)
        finally:
            await conn.close()
    assert len(refused) == len(cases) >= 45
    assert set(refused) <= {"42501", "22023", "XX000"}, refused
    assert await run_rows(gp, run_id) == before
    assert await gp.fetchval("SELECT md5(string_agg(source, '')) FROM ctq.server_code") == code
    assert await gp.fetchval("SELECT count(*) FROM ctq.meta WHERE key = 'python_path' "
                             "AND value::text LIKE '%/tmp%'") == 0
    assert await gp.fetchval("SELECT count(*) FROM ctq_catalog.packs WHERE pack_id LIKE '00000000000000%'") == 0
    assert await gp.fetchval("SELECT count(*) FROM ctq_catalog.runs WHERE name = 'x'") == 0


async def test_a_run_shared_with_a_role_is_read_only_for_it_on_greenplum(gp, analysts, tmp_path):
    run_id = analysts["run"]
    assert ctq("share", str(run_id), TEAM, role=BOB).returncode == 2  # not bob's to share
    proc = ctq("share", str(run_id), TEAM, role=ALICE)
    assert proc.returncode == 0 and TEAM in proc.stdout, proc.stderr
    try:
        before = await run_rows(gp, run_id)
        assert run_id in {r["run_id"] for r in json.loads(ctq("runs", "--json", role=BOB).stdout)}
        bob = await asyncpg.connect(as_role(BOB))
        try:
            for view in ("runs", "models", "hops", "epochs", "leaderboard", "learning_curves", "segment_utilization"):
                assert await bob.fetchval(f"SELECT count(*) FROM ctq.{view} WHERE run_id = $1", run_id) > 0, view
            assert await bob.fetchval("SELECT count(*) > 0 FROM ctq.model_state_parts($1, 1)", run_id)
            writes = [f"UPDATE ctq.runs SET shared_with = '{{}}' WHERE run_id = {run_id}",
                      f"UPDATE ctq.models SET state = NULL WHERE run_id = {run_id}",
                      f"DELETE FROM ctq.hops WHERE run_id = {run_id}",
                      f"SELECT ctq.heartbeat({run_id})", f"SELECT ctq.resume_run({run_id})",
                      f"SELECT ctq.share_run({run_id}, ARRAY['{CAROL}'], false)",
                      f"SELECT ctq.model_status({run_id}, 1, 'failed', 'x')",
                      f"SELECT * FROM ctq.gp_hop({run_id}, 1, 9, 0, false, false, 0, '{{}}', 'cached', ARRAY[0, 1])",
                      f"SELECT * FROM ctq.restore_checkpoints({run_id}, 2)"]
            for sql in writes:
                with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                    await bob.execute(sql)
        finally:
            await bob.close()
        resumed = ctq("train", "--resume", str(run_id), "-q", role=BOB)
        assert resumed.returncode == 2 and "read-only" in resumed.stderr, resumed.stderr
        # a reader uses the run: exports its model, warm-starts a run of its own from it
        proc = ctq("export", str(run_id), str(tmp_path / "shared.keras"), role=BOB)
        assert proc.returncode == 0, proc.stderr
        grid = write_grid(tmp_path, ANALYST_GRID.replace("epochs: 2", f"epochs: 1\n    warm_start: {run_id}")
                          .replace("gp-analyst", "gp-warm"))
        proc = ctq("train", str(grid), "--json", "-q", role=BOB)
        assert proc.returncode == 0, proc.stderr
        warm = json.loads(proc.stdout)["run_id"]
        assert await gp.fetchval("SELECT run_by FROM ctq_catalog.runs WHERE run_id = $1", warm) == BOB
        assert await run_rows(gp, run_id) == before
        assert run_id not in {r["run_id"] for r in json.loads(ctq("runs", "--json", role=CAROL).stdout)}
    finally:
        proc = ctq("share", str(run_id), TEAM, "--revoke", role=ALICE)
        assert proc.returncode == 0 and "no one" in proc.stdout, proc.stderr
    assert run_id not in {r["run_id"] for r in json.loads(ctq("runs", "--json", role=BOB).stdout)}


async def test_analyst_without_select_on_the_source_is_refused_on_greenplum(gp, analysts):
    before = await gp.fetchval("SELECT (SELECT count(*) FROM ctq_catalog.runs) + (SELECT count(*) "
                               "FROM ctq_catalog.packs)")
    proc = ctq("train", str(analysts["grid"]), "--name", "carol-run", "-q", role=CAROL)
    assert proc.returncode == 2 and "GRANT SELECT ON" in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert await gp.fetchval("SELECT (SELECT count(*) FROM ctq_catalog.runs) + (SELECT count(*) "
                             "FROM ctq_catalog.packs)") == before
    carol = await asyncpg.connect(as_role(CAROL))
    try:
        assert await carol.fetchval("SELECT count(*) FROM ctq.packs WHERE pack_id = $1", analysts["pack"]) == 0
    finally:
        await carol.close()


async def test_install_moves_the_tables_of_an_earlier_catalog_and_keeps_its_runs(gp, analysts):
    """A catalog installed before ctq_catalog had the tables in ctq: `ctq install` moves them,
    rows and run-id sequence included, and puts the views in their place."""
    tables = ("runs", "models", "hops", "epochs", "decisions", "packs")
    counts = {t: await gp.fetchval(f"SELECT count(*) FROM ctq_catalog.{t}") for t in tables}
    next_id = await gp.fetchval("SELECT max(run_id) FROM ctq_catalog.runs")
    async with gp.transaction():  # back to the earlier layout
        await gp.execute("DROP VIEW " + ", ".join(f"ctq.{t}" for t in tables))
        for t in tables:
            await gp.execute(f"ALTER TABLE ctq_catalog.{t} SET SCHEMA ctq")
    proc = ctq("install", *(["--python-path", PYTHON_PATH] if PYTHON_PATH else []))
    assert proc.returncode == 0, proc.stderr
    assert {t: await gp.fetchval(f"SELECT count(*) FROM ctq_catalog.{t}") for t in tables} == counts
    kinds = {r["relname"]: r["relkind"] for r in await gp.fetch(
        "SELECT c.relname, c.relkind::text AS relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'ctq' AND c.relname = ANY($1::text[])", list(tables))}
    assert kinds == {t: "v" for t in tables}
    listed = json.loads(ctq("runs", "--json", role=ALICE).stdout)
    assert analysts["run"] in {r["run_id"] for r in listed} and {r["run_by"] for r in listed} == {ALICE}
    assert await gp.fetchval("SELECT nextval('ctq_catalog.runs_run_id_seq')") > next_id


@pytest.mark.parametrize("text", [False, True], ids=["numbers-as-bytes", "parsed"])
async def test_load_creates_a_distributed_table_on_greenplum(gp, tmp_path, text):
    """`ctq load` through the coordinator: distributed by the column named (else randomly), every
    row on the segments, and the same types and values as on PostgreSQL."""
    path = tmp_path / "gp_load.csv.gz"
    import gzip

    with gzip.open(path, "wt") as f:
        f.write("id,x,label\n" + "".join(f"{i},{i / 8},{('c' if text else '')}{i % 3}\n" for i in range(30_000)))
    for args, policy in ((["--distributed-by", "id"], [1]), ([], None)):
        proc = ctq("load", str(path), "--table", "public.ctq_gp_loaded", "--replace", *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == ("created public.ctq_gp_loaded: 3 columns (id int8, x float8, "
                                       f"label {'text' if text else 'int8'}), 30000 rows")
        keys = await gp.fetchval("SELECT distkey::int2[] FROM gp_distribution_policy "
                                 "WHERE localoid = 'public.ctq_gp_loaded'::regclass")
        assert (list(keys) if keys else None) == policy
        assert await gp.fetchval("SELECT sum(x) FROM public.ctq_gp_loaded") == sum(i / 8 for i in range(30_000))
        assert await gp.fetchval("SELECT count(DISTINCT gp_segment_id) FROM public.ctq_gp_loaded") == \
            await primaries(gp)
    proc = ctq("load", str(path), "--table", "public.ctq_gp_loaded", "--replace", "--distributed-by", "nope")
    assert proc.returncode == 2 and "--distributed-by 'nope': not a column" in proc.stderr, proc.stderr
    await gp.execute("DROP TABLE public.ctq_gp_loaded")

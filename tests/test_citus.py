"""The Citus engine against a real Citus cluster (opt-in).

Set ``CTQ_TEST_CITUS_DSN`` (a superuser on the coordinator of a Citus 13 database with at least two
workers, plpython3u and Keras importable on every node, e.g.
``postgresql://postgres@127.0.0.1:9700/ctqtest``) and, if the nodes need it, the server-side
``CTQ_TEST_CITUS_PYTHON_PATH`` (a site-packages directory readable by the nodes' OS user; docs/citus.md
shows a cluster on loopback). Without the DSN this module is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import asyncpg
import pytest

from conftest import assert_states_follow_the_recorded_hops, create_table, write_grid
from ctq.engines import CitusEngine, PostgresEngine

DSN = os.environ.get("CTQ_TEST_CITUS_DSN")
PYTHON_PATH = os.environ.get("CTQ_TEST_CITUS_PYTHON_PATH")
pytestmark = [
    pytest.mark.skipif(not DSN, reason="set CTQ_TEST_CITUS_DSN to run the Citus suite"),
    pytest.mark.asyncio(loop_scope="session"),
]

GRID = """
    name: citus-{schedule}
    data: {{table: public.ctq_citus_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
           task: classification}}
    segments: {segments}
    models:
      - {{name: small, layers: [{{dense: 16}}]}}
      - {{name: wide, layers: [{{dense: 64}}, {{dense: 64}}]}}
    search: {{seed: 3, space: {{learning_rate: [0.01, 0.003], batch_size: [64]}}}}
    epochs: 2
    metric: val_accuracy
"""


def ctq(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CTQ_DSN=DSN, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "ctq.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
async def citus():
    """The suite's database with ctq installed and a source table on the coordinator."""
    install = ctq("install", *(["--python-path", PYTHON_PATH] if PYTHON_PATH else []))
    assert install.returncode == 0, install.stderr
    conn = await asyncpg.connect(DSN)
    await create_table(conn, "public.ctq_citus_src", 3000, seed=5)
    yield conn
    await conn.close()


async def segment_nodes(conn) -> dict[int, int]:
    """Each segment's worker, by port (where its shard is placed)."""
    return {r["segment"]: r["nodeport"] for r in await conn.fetch(CitusEngine().template("segments.sql"))}


async def workers(conn) -> int:
    return await conn.fetchval(CitusEngine().template("workers.sql"))


@pytest.mark.parametrize("schedule", ["mop", "bsp"])
async def test_train_on_citus_runs_every_hop_on_its_worker(citus, tmp_path, schedule):
    """Every hop ran on the worker of its segment's shard, as the training function reports from
    inside; each model visits every segment once an epoch; the segments spread over the workers;
    a model's state lies in the shard of its last hop's segment, and nowhere else."""
    count = await workers(citus)
    grid = write_grid(tmp_path, GRID.format(schedule=schedule, segments=count))
    proc = ctq("train", str(grid), "--json", "--schedule", schedule)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["engine"] == "citus"
    assert await citus.fetchval("SELECT engine FROM ctq.runs WHERE run_id = $1", result["run_id"]) == "citus"
    nodes = await segment_nodes(citus)
    assert len({nodes[s] for s in range(count)}) == count  # one segment per worker
    hops = await citus.fetch("SELECT model_id, epoch, segment, executed_on, started_at, finished_at, rows "
                             "FROM ctq.hops WHERE run_id = $1", result["run_id"])
    assert len(hops) == 4 * 2 * count
    assert all(h["executed_on"] == h["segment"] for h in hops)
    visits = defaultdict(list)
    for h in hops:
        visits[(h["model_id"], h["epoch"])].append(h["segment"])
    assert all(sorted(v) == list(range(count)) for v in visits.values())
    for a in hops:  # a model is never on two segments at once, a segment never runs two hops
        for b in hops:
            if a is not b and (a["model_id"] == b["model_id"] or a["segment"] == b["segment"]):
                assert a["finished_at"] <= b["started_at"] or b["finished_at"] <= a["started_at"]
    keys = {r["segment"]: r["dist_key"] for r in await citus.fetch("SELECT segment, dist_key FROM ctq.citus_segments")}
    states = await citus.fetch("SELECT model_id, dist_key, hops FROM ctq.model_states WHERE run_id = $1 "
                               "AND array_index < 0 UNION ALL SELECT model_id, dist_key, hops FROM ctq.hop_states "
                               "WHERE run_id = $1", result["run_id"])
    last = {}
    for h in sorted(hops, key=lambda h: h["finished_at"]):
        last[h["model_id"]] = h["segment"]
    assert sorted((s["model_id"], s["dist_key"], s["hops"]) for s in states) == \
        sorted((m, keys[seg], 2 * count) for m, seg in last.items())
    assert result["best_metric"] > 0.5  # 3 classes: chance is about 0.33


async def test_training_query_is_one_task_on_the_segment_worker(citus):
    """EXPLAIN of each segment's training query on the newest pack: a router query, one task, on
    the worker of that segment's shard, the aggregate (ctq.train_step) below it, on that worker."""
    engine = CitusEngine()
    await engine.attach(citus)
    pack = await citus.fetchrow(engine.template("newest_pack.sql"))
    if pack is None:
        pytest.skip("no pack yet (the training test makes one)")
    nodes = await segment_nodes(citus)
    for segment in range(await workers(citus)):
        train = engine.hop_statements(segment, pack["pack_id"], pack["table_name"]).train
        plan = "\n".join(r[0] for r in await citus.fetch("EXPLAIN (VERBOSE) " + train, "{}", 0, 0, 0))
        assert "Task Count: 1" in plan and f"port={nodes[segment]} " in plan, plan
        assert plan.index("Node: ") < plan.index("Aggregate") and "ctq.train_step(" in plan.split("Node: ")[1]
        store = engine.hop_statements(segment, pack["pack_id"], pack["table_name"]).hop
        plan = "\n".join(r[0] for r in await citus.fetch("EXPLAIN " + store, 0, 0, 0, "x"))
        assert "pull to coordinator" not in plan and "Task Count: 1" in plan and f"port={nodes[segment]} " in plan


async def test_a_query_on_another_node_is_refused(citus):
    """ctq.execution_segment says from inside whether the node it runs on holds the segment's
    shard: asked for segment 0 in a router query on segment 1's shard (or on the coordinator), it
    answers minus that node's id, which ctq.record_hop refuses."""
    engine = CitusEngine()
    await engine.attach(citus)
    pack = await citus.fetchrow(engine.template("newest_pack.sql"))
    if pack is None:
        pytest.skip("no pack yet (the training test makes one)")
    marker = f"FROM {pack['table_name']} b WHERE b.dist_key = {engine.key(1)} AND b.segment = 1 AND b.bucket = -1"
    assert await citus.fetchval(f"SELECT ctq.execution_segment(1) {marker}") == 1
    elsewhere = await citus.fetchval(f"SELECT ctq.execution_segment(0) {marker}")
    node = await citus.fetchval("SELECT n.nodeid FROM pg_dist_node n JOIN pg_dist_placement p USING (groupid) "
                                "WHERE p.shardid = (SELECT shardid FROM ctq.citus_segments WHERE segment = 1)")
    assert elsewhere == -node
    assert await citus.fetchval("SELECT ctq.execution_segment(0)") < 0  # the coordinator holds no shard
    with pytest.raises(asyncpg.PostgresError, match=f"sent to segment 0 ran on segment {elsewhere}"):
        await citus.fetchval("SELECT ctq.record_hop(0, 0, 0, 0, false, ROW(NULL, 0, 0, 1, 0, NULL, NULL, now(), now(), "
                             "$1, 'x', 1)::ctq.hop_result, 1)", elsewhere)


async def test_doctor_checks_every_worker_and_shows_the_plan(citus):
    proc = ctq("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["keras on workers"]["ok"], checks["keras on workers"]
    assert f"{await workers(citus)} workers" in checks["keras on workers"]["detail"]
    assert checks["router queries"]["ok"], checks["router queries"]
    assert "Task Count: 1" in checks["router queries"]["detail"] or "no pack yet" in checks["router queries"]["detail"]


async def test_predict_evaluate_and_warm_start_on_citus(citus, tmp_path):
    """Scoring stages the rows in the segments' shards and runs each segment's query on its worker
    (the scoring function refuses to run elsewhere), reading the model's state where it lies; a
    warm-started run starts from the source run's states."""
    count = await workers(citus)
    grid = write_grid(tmp_path, GRID.format(schedule="score", segments=count))
    proc = ctq("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    await citus.execute("DROP TABLE IF EXISTS public.ctq_citus_ids; CREATE TABLE public.ctq_citus_ids AS "
                        "SELECT row_number() OVER () AS id, * FROM public.ctq_citus_src")
    evaluated = ctq("evaluate", str(run["run_id"]), "--table", "public.ctq_citus_ids", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    predicted = ctq("predict", str(run["run_id"]), "--table", "public.ctq_citus_ids", "--id-column", "id",
                    "--out", "public.ctq_citus_pred", "--replace", "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["segments"] == count
    row = await citus.fetchrow("SELECT count(*) AS n, count(DISTINCT p.id) AS ids, avg((p.prediction = s.label)::int) "
                               "AS accuracy FROM public.ctq_citus_pred p JOIN public.ctq_citus_ids s USING (id)")
    assert row["n"] == row["ids"] == 3000
    assert abs(float(row["accuracy"]) - metrics["accuracy"]) < 1e-6
    assert await citus.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'ctq_data' "
                                "AND tablename LIKE 'score_%'") == 0
    warm = write_grid(tmp_path, GRID.format(schedule="warm", segments=count) + f"    warm_start: {run['run_id']}\n",
                      name="warm.yaml")
    proc = ctq("train", str(warm), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["best_metric"] >= run["best_metric"] - 0.05


async def test_mop_state_equals_standalone_keras_on_citus(citus, tmp_path):
    """The whole training state hops between workers: the final weights and optimizer slots equal a
    plain Keras run over the same segments in the same order."""
    from test_mop_equals_sequential import GRID as SEQ_GRID

    grid = write_grid(tmp_path, SEQ_GRID.format(table="public.ctq_citus_src"))
    proc = ctq("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    segments = await citus.fetchval("SELECT segments FROM ctq.runs WHERE run_id = $1", run_id)
    assert segments == 2  # the grid's, on two workers
    await assert_states_follow_the_recorded_hops(citus, run_id, segments)


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT"])
async def test_stop_and_resume_on_citus(citus, tmp_path, stop):
    """kill -9 (or Ctrl-C: exit 130, run 'interrupted', no training query left on the coordinator)
    of the client mid-run, then --resume: the same run finishes, every hop recorded once and none
    trained twice or lost: each model ends in the state plain Keras reaches over its recorded hops."""
    import asyncio
    import signal
    import time

    name = f"citus-resume-{stop.lower()}"
    count = await workers(citus)
    grid = write_grid(tmp_path, GRID.format(schedule="resume", segments=count).replace("epochs: 2", "epochs: 4")
                      .replace("name: citus-resume", f"name: {name}"))
    before = await citus.fetchval("SELECT coalesce(max(run_id), 0) FROM ctq.runs")  # a stale run of an earlier session is not ours
    proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", "train", str(grid), "--json", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, CTQ_DSN=DSN))
    run_id = None
    for _ in range(600):
        run_id = await citus.fetchval("SELECT max(run_id) FROM ctq.runs WHERE name = $1 AND status = 'running' "
                                      "AND run_id > $2", name, before)
        if run_id and await citus.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) >= 4:
            break
        await asyncio.sleep(0.2)
    assert run_id is not None
    sent = time.monotonic()
    proc.send_signal(getattr(signal, stop))
    proc.wait(timeout=60)
    if stop == "SIGINT":
        assert proc.returncode == 130 and time.monotonic() - sent < 15
        assert await citus.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "interrupted"
        assert await citus.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 "
                                    "AND state = 'active'", f"ctq run {run_id} %") == 0
    resumed = ctq("train", "--resume", str(run_id), "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id
    rows = await citus.fetch("SELECT model_id, epoch, segment, executed_on FROM ctq.hops WHERE run_id = $1", run_id)
    assert len(rows) == 4 * 4 * count
    assert len({(r["model_id"], r["epoch"], r["segment"]) for r in rows}) == len(rows)
    assert all(r["executed_on"] == r["segment"] for r in rows)
    await assert_states_follow_the_recorded_hops(citus, run_id, count)


def as_role(role: str) -> str:
    """The suite's DSN with another user (the cluster trusts local connections)."""
    if "postgres@" not in DSN:
        pytest.skip("CTQ_TEST_CITUS_DSN does not name user postgres; cannot derive a DSN for another role")
    return DSN.replace("postgres@", f"{role}@")


async def test_analysts_on_citus(citus, tmp_path):
    """An analyst (ctq grant) packs and trains on the workers; another sees none of its runs (the
    catalog's row-level security on the coordinator); a role outside ctq_user may not read the
    distributed state tables (Citus enforces their table privileges)."""
    for role in ("ctq_citus_a", "ctq_citus_b", "ctq_citus_x"):  # (kept between runs: a owns its pack)
        if not await citus.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await citus.execute(f"CREATE ROLE {role} LOGIN")
    await citus.execute("GRANT SELECT ON public.ctq_citus_src TO ctq_citus_a")
    for role in ("ctq_citus_a", "ctq_citus_b"):
        assert ctq("grant", role).returncode == 0
    count = await workers(citus)
    grid = write_grid(tmp_path, GRID.format(schedule="analyst", segments=count)
                      .replace("task: classification", "task: classification, validation_fraction: 0.3"))
    env = dict(os.environ, CTQ_DSN=as_role("ctq_citus_a"), COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "ctq.cli", "train", str(grid), "--json"], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    assert await citus.fetchval("SELECT r.run_by = 'ctq_citus_a' AND p.packed_by = 'ctq_citus_a' FROM ctq.runs r "
                                "JOIN ctq.packs p USING (pack_id) WHERE r.run_id = $1", run_id)
    b = await asyncpg.connect(as_role("ctq_citus_b"))
    x = await asyncpg.connect(as_role("ctq_citus_x"))
    try:
        assert await b.fetchval("SELECT count(*) FROM ctq.runs WHERE run_id = $1", run_id) == 0
        assert await b.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await x.fetchval("SELECT count(*) FROM ctq.model_states")
    finally:
        await b.close()
        await x.close()


async def test_a_hop_whose_worker_backend_dies_is_retried(citus, tmp_path):
    """A worker backend killed in the middle of a hop (its connection to the coordinator lost):
    the hop is retried on a new connection and the run completes, every hop once on its worker."""
    import asyncio

    count = await workers(citus)
    grid = write_grid(tmp_path, GRID.format(schedule="retry", segments=count).replace("epochs: 2", "epochs: 4"))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ctq.cli", "train", str(grid), "--json", "-q",
                                                env=dict(os.environ, CTQ_DSN=DSN), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    port = (await segment_nodes(citus))[0]
    worker = await asyncpg.connect(DSN.replace(":9700/", f":{port}/") if ":9700/" in DSN else DSN)
    killed = []
    try:
        for _ in range(1200):  # once hops are running (a warm-up that fails fails the run, on every engine)
            if not await citus.fetchval("SELECT count(*) FROM ctq.hops h JOIN ctq.runs r USING (run_id) "
                                        "WHERE r.name = 'citus-retry' AND r.status = 'running'"):
                await asyncio.sleep(0.05)
                continue
            killed = await worker.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'active' "
                                        "AND query LIKE '%ctq.train_step(%' AND pid <> pg_backend_pid()")
            if killed or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
    out, err = await asyncio.wait_for(proc.communicate(), timeout=900)
    assert proc.returncode == 0, err.decode()
    if not killed:
        pytest.skip("no hop was caught running on the worker")
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["retries"] >= 1
    rows = await citus.fetch("SELECT model_id, epoch, segment, executed_on FROM ctq.hops WHERE run_id = $1",
                             result["run_id"])
    assert len(rows) == 4 * 4 * count and all(r["executed_on"] == r["segment"] for r in rows)


async def test_several_segments_per_worker(citus, tmp_path):
    """segments: twice the workers: each worker holds two segments' shards, and every hop runs on
    the worker of its own segment."""
    count = 2 * await workers(citus)
    grid = write_grid(tmp_path, GRID.format(schedule="per-worker", segments=count).replace("epochs: 2", "epochs: 1"))
    proc = ctq("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    nodes = await segment_nodes(citus)
    assert sorted(list(nodes[s] for s in range(count)).count(p) for p in set(nodes.values())) == [2] * (count // 2)
    rows = await citus.fetch("SELECT segment, executed_on FROM ctq.hops WHERE run_id = $1", run_id)
    assert len(rows) == 4 * count and all(r["executed_on"] == r["segment"] for r in rows)


async def test_a_diverging_model_fails_alone_on_citus(citus, tmp_path):
    """A model failure raised on a worker reaches the client with its SQLSTATE through the
    coordinator: the model fails, the other trains on."""
    await citus.execute("DROP TABLE IF EXISTS public.ctq_citus_reg; CREATE TABLE public.ctq_citus_reg AS SELECT "
                        "g::float8 AS x1, (g % 7)::float8 AS x2, (3 * g + 1)::float8 AS y FROM generate_series(1, 400) g")
    grid = write_grid(tmp_path, """
        name: citus-diverging
        data: {table: public.ctq_citus_reg, features: [x1, x2], label: y, task: regression}
        segments: 2
        models:
          - name: lin
            layers: [{dense: 8, activation: relu}]
        search:
          space:
            optimizer: [sgd]
            learning_rate: [0.001, 1.0e+12]
            batch_size: [20]
        epochs: 2
        metric: val_mae
    """)
    proc = ctq("train", str(grid), "--json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result["failed_models"]) == ["2"]
    assert result["failed_models"]["2"].startswith("training diverged: loss is nan"), result
    assert await citus.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1 AND model_id = 1",
                                result["run_id"]) == 4


async def test_a_distributed_source_is_packed_on_the_workers(citus, tmp_path):
    """A source that is a distributed table is packed worker to worker (a repartitioned INSERT ...
    SELECT of its rows into their segments' shards, then each worker builds its buffers): every row
    once in its segment's shard, the validation rows in every segment's; its rows' keys are told
    apart across shards (ctids repeat there)."""
    await citus.execute("DROP TABLE IF EXISTS public.ctq_citus_dist; CREATE TABLE public.ctq_citus_dist AS "
                        "SELECT * FROM public.ctq_citus_src")
    await citus.execute("SELECT create_distributed_table('public.ctq_citus_dist', 'f1')")
    await citus.execute("SELECT truncate_local_data_after_distributing_table('public.ctq_citus_dist')")
    distinct = {name: await citus.fetchval(f"SELECT count(DISTINCT {engine.row_key('t', 3, True)}) "
                                           "FROM public.ctq_citus_dist t")
                for name, engine in (("ctid", PostgresEngine()), ("shard and ctid", CitusEngine()))}
    # (a shard is told by its oid, which two workers may both give theirs: some keys still repeat)
    assert distinct["shard and ctid"] > max(0.9 * 3000, 2 * distinct["ctid"]), distinct
    count = await workers(citus)
    grid = write_grid(tmp_path, GRID.format(schedule="dist", segments=count).replace("ctq_citus_src", "ctq_citus_dist")
                      .replace("epochs: 2", "epochs: 1"))
    proc = ctq("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    pack = await citus.fetchrow("SELECT p.table_name, p.stats::text AS stats FROM ctq.packs p "
                                "WHERE p.pack_id = (SELECT pack_id FROM ctq.runs WHERE run_id = $1)", run_id)
    stats = json.loads(pack["stats"])
    rows = {(r["dist_key"], r["segment"]): r["n"] for r in await citus.fetch(
        f"SELECT dist_key, segment, sum(rows)::int AS n FROM {pack['table_name']} WHERE bucket >= 0 GROUP BY 1, 2")}
    keys = [r["dist_key"] for r in await citus.fetch("SELECT dist_key FROM ctq.citus_segments ORDER BY segment")]
    assert sum(rows.get((keys[s], s), 0) for s in range(count)) == stats["train_rows"]
    assert all(rows[(keys[s], -1)] == stats["validation_rows"] for s in range(count))
    assert stats["train_rows"] + stats["validation_rows"] == 3000
    assert await citus.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pack_%_stage'") == 0
    hops = await citus.fetch("SELECT segment, executed_on FROM ctq.hops WHERE run_id = $1", run_id)
    assert len(hops) == 4 * count and all(h["executed_on"] == h["segment"] for h in hops)

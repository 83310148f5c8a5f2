"""The Greenplum engine against a real Greenplum cluster (opt-in).

Set ``CTQ_TEST_GREENPLUM_DSN`` (a superuser on a Greenplum 6/7 or Cloudberry database with
plpython3u and Keras importable on every segment) and, if the segments need it, the server-side
``CTQ_TEST_GREENPLUM_PYTHON_PATH`` (a site-packages directory readable by the cluster's OS user).
Without the DSN this module is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import asyncpg
import pytest

from conftest import create_table, write_grid
from ctq.engines import GreenplumEngine

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


def ctq(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CTQ_DSN=DSN, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "ctq.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
async def gp():
    install = ctq("install", *(["--python-path", PYTHON_PATH] if PYTHON_PATH else []))
    assert install.returncode == 0, install.stderr
    conn = await asyncpg.connect(DSN)
    await create_table(conn, "public.ctq_gp_src", 4000, seed=5)
    yield conn
    await conn.close()


async def primaries(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM gp_segment_configuration WHERE role = 'p' AND content >= 0")


@pytest.mark.parametrize("schedule", ["mop", "bsp"])
async def test_train_on_greenplum_runs_every_hop_on_its_segment(gp, tmp_path, schedule):
    grid = write_grid(tmp_path, GRID.format(schedule=schedule))
    proc = ctq("train", str(grid), "--json", "--schedule", schedule)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["engine"] == "greenplum"
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


async def test_training_query_is_direct_dispatched_with_no_motion_below_the_aggregate(gp, tmp_path):
    grid = write_grid(tmp_path, GRID.format(schedule="plan"))
    assert ctq("train", str(grid), "--json").returncode == 0
    pack = await gp.fetchrow("SELECT pack_id, table_name FROM ctq.packs p JOIN ctq.runs r USING (pack_id) "
                             "ORDER BY r.run_id DESC LIMIT 1")
    for segment in range(await primaries(gp)):
        query = GreenplumEngine().train_query(segment, pack["pack_id"], pack["table_name"], "NULL::bytea",
                                              "'{}'::text")
        plan = [r[0] for r in await gp.fetch("EXPLAIN " + query)]
        assert plan[0].startswith("Gather Motion 1:1  (slice1; segments: 1)"), plan
        assert not any("Motion" in line for line in plan[1:]), plan
        assert any("Aggregate" in line for line in plan), plan
        rows = await gp.fetchval(f"SELECT count(*) FROM {pack['table_name']} WHERE gp_segment_id = {segment} "
                                 f"AND segment = {segment}")
        assert rows >= 2  # its training buffers and its marker live on that segment


async def test_mop_state_equals_standalone_keras_on_greenplum(gp, tmp_path):
    """The whole training state hops between real segments: the final weights and optimizer slots
    equal a plain Keras run over the same segments in the same order."""
    from conftest import assert_close
    from ctq.indb import decode_state
    from test_mop_equals_sequential import GRID as SEQ_GRID
    from test_mop_equals_sequential import model_state, segment_arrays, standalone_keras

    grid = write_grid(tmp_path, SEQ_GRID.format(table="public.ctq_gp_src"))
    proc = ctq("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    pack = await gp.fetchrow("SELECT p.table_name, p.stats::text AS stats FROM ctq.packs p "
                             "WHERE p.pack_id = (SELECT pack_id FROM ctq.runs WHERE run_id = $1)", run_id)
    stats = json.loads(pack["stats"])
    segments = await primaries(gp)
    data = {s: await segment_arrays(gp, pack["table_name"], s, stats) for s in range(segments)}
    for m in await gp.fetch("SELECT model_id, architecture::text, hyperparameters::text, seed, state "
                            "FROM ctq.models WHERE run_id = $1 ORDER BY model_id", run_id):
        order = [r["segment"] for r in await gp.fetch(
            "SELECT segment FROM ctq.hops WHERE run_id = $1 AND model_id = $2 ORDER BY started_at",
            run_id, m["model_id"])]
        expected = model_state(standalone_keras(json.loads(m["architecture"])["layers"],
                                                json.loads(m["hyperparameters"]), m["seed"],
                                                [data[s] for s in order], stats["n_outputs"]))
        actual = decode_state(m["state"])
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_close(a, e)


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT"])
async def test_stop_and_resume_on_greenplum(gp, tmp_path, stop):
    """kill -9 (or Ctrl-C: exit 130, run 'interrupted', no training query left on the cluster) of
    the coordinator mid-run, then --resume: the same run finishes, no hop repeated or lost."""
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


async def test_an_administrator_role_trains_on_greenplum_and_analysts_are_refused(gp, tmp_path):
    """Roles and grants as on PostgreSQL: a non-superuser in ctq_admin, with SELECT on the source,
    packs and trains (Greenplum checks UPDATE on the run-id sequence when a segment asks for the next
    value). Greenplum 6 has no row-level security, so `ctq grant ROLE` (an analyst, who would see
    everyone's runs) is refused with the reason and the alternatives; the role is left unchanged."""
    role = "ctq_gp_admin"  # roles are cluster-wide: kept from an earlier run, in any database
    if await gp.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role):
        await gp.execute(f"REVOKE ctq_admin FROM {role}")
    else:
        await gp.execute(f"CREATE ROLE {role} LOGIN")
    source = f"ctq_gp_admin_src_{os.getpid()}"  # never packed before: the role packs it itself
    await gp.execute(f"CREATE TABLE public.{source} AS SELECT * FROM public.ctq_gp_src LIMIT 1500")
    await gp.execute(f"GRANT SELECT ON public.{source} TO {role}")
    refused = ctq("grant", role)
    assert refused.returncode == 2 and "row-level security" in refused.stderr, refused.stderr
    assert not await gp.fetchval("SELECT pg_has_role($1, 'ctq_user', 'MEMBER')", role)
    assert ctq("grant", role, "--admin").returncode == 0
    grid = write_grid(tmp_path, GRID.format(schedule="admin").replace("ctq_gp_src", source))
    user_dsn = DSN.replace("gpadmin@", f"{role}@") if "gpadmin@" in DSN else None
    if user_dsn is None:
        pytest.skip("CTQ_TEST_GREENPLUM_DSN does not name user gpadmin; cannot derive a DSN for another role")
    env = dict(os.environ, CTQ_DSN=user_dsn, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "ctq.cli", "train", str(grid), "--json", "-q"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and not result["pack_reused"]
    assert await gp.fetchval("SELECT run_by FROM ctq.runs WHERE run_id = $1", result["run_id"]) == role
    assert await gp.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1 AND executed_on = segment",
                             result["run_id"]) == 4 * 2 * await primaries(gp)
    assert await gp.fetchval("SELECT p.packed_by FROM ctq.packs p JOIN ctq.runs r USING (pack_id) "
                             "WHERE r.run_id = $1", result["run_id"]) == role
    await gp.execute(f"DROP TABLE public.{source}")


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
                     x_bytes="t.f1::text::bytea", y_bytes="NULL::bytea", segments=await primaries(gp), stage="ctq_data.ctq_gp_score_plan")
    await engine.prepare_scoring(gp, spec, b"state", ["{}"] * spec.segments)
    try:
        for segment in range(spec.segments):
            plan = [r[0] for r in await gp.fetch("EXPLAIN " + engine.score_query(spec, segment))]
            assert plan[0].startswith("Gather Motion 1:1  (slice1; segments: 1)"), plan
            assert not any("Motion" in line for line in plan[1:]), plan
            assert await gp.fetchval(f"SELECT count(*) FROM {spec.stage} WHERE gp_segment_id = {segment} "
                                     "AND state IS NOT NULL") == 1  # its header row lives on it
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
    proc = ctq("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["best_metric"] > 0.95, out
    stats = json.loads(await gp.fetchval("SELECT p.stats FROM ctq.packs p JOIN ctq.runs r USING (pack_id) "
                                         "WHERE r.run_id = $1", out["run_id"]))
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

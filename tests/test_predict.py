"""`ctq predict`, `ctq evaluate`, `ctq export` end to end: real PostgreSQL, models trained by the real
CLI, predictions made inside the server, compared with the exported .keras file in plain Keras and
with a numpy forward pass of the trained weights on statistics computed here from the training rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import asyncpg
import numpy as np
import pytest

from conftest import ONE_MODEL_ON_SMALL, make, write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLASSES = ["high", "low", "mid"]  # text class values, sorted as the pack records them

GRID = """
    name: {name}
    data: {{table: {table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: {label}, task: {task}}}
    segments: 2
    models:
      - {{name: small, layers: [{{dense: 16, activation: relu}}]}}
    search: {{seed: 5, space: {{learning_rate: [0.01], batch_size: [64]}}}}
    epochs: 2
    metric: {metric}
"""


async def make_tables(conn, name: str, rows: int, seed: int) -> None:
    """``name``: id, 8 features, a text class label and a regression target far from unit scale."""
    x, y = make(rows, seed)
    target = 1000.0 + 250.0 * (x[:, 0] - 0.5 * x[:, 1]) + 40.0 * np.sin(x[:, 2])
    cols = ", ".join(f"f{i} float8" for i in range(1, 9))
    await conn.execute(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int8, {cols}, label text, target float8)")
    schema, _, table = name.rpartition(".")
    labels = {0: "low", 1: "mid", 2: "high"}
    await conn.copy_records_to_table(
        table, schema_name=schema, records=[(10_000 + i,) + tuple(map(float, r)) + (labels[int(c)], float(t))
                                            for i, (r, c, t) in enumerate(zip(x, y, target))])


def cli(dsn, ctq_home, *args):
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "ctq.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
async def runs(dsn, ctq_home, tmp_path_factory):
    """One classification and one regression run (1 model, 2 epochs, 2 segments), and a held-out table."""
    conn = await asyncpg.connect(dsn)
    await make_tables(conn, "public.pred_train", 3000, seed=11)
    await make_tables(conn, "public.pred_holdout", 500, seed=12)
    await conn.close()
    d = tmp_path_factory.mktemp("predict")
    out = {}
    for task, label, metric in (("classification", "label", "val_accuracy"), ("regression", "target", "val_mae")):
        grid = write_grid(d, GRID.format(name=f"pred-{task}", table="public.pred_train", label=label, task=task,
                                         metric=metric), name=f"{task}.yaml")
        proc = cli(dsn, ctq_home, "train", str(grid), "--json", "-q")
        assert proc.returncode == 0, proc.stderr
        out[task] = json.loads(proc.stdout)["run_id"]
    return out


@pytest.fixture(scope="module")
def exported(runs, dsn, ctq_home, tmp_path_factory):
    """Each run's best model exported, loaded back in plain Keras (no ctq involved in loading)."""
    from ctq.indb import import_keras

    keras = import_keras()
    d = tmp_path_factory.mktemp("export")
    models = {}
    for task, run_id in runs.items():
        path = d / f"{task}.keras"
        proc = cli(dsn, ctq_home, "export", str(run_id), str(path), "--json")
        assert proc.returncode == 0, proc.stderr
        models[task] = keras.saving.load_model(path)
    return models


async def holdout(conn):
    rows = await conn.fetch("SELECT id, f1, f2, f3, f4, f5, f6, f7, f8, label, target FROM public.pred_holdout "
                            "ORDER BY id")
    x = np.array([[r[f"f{i}"] for i in range(1, 9)] for r in rows], np.float32)
    return [r["id"] for r in rows], x, [r["label"] for r in rows], np.array([r["target"] for r in rows])


async def numpy_forward(conn, dsn, ctq_home, run_id: int, model, task: str, x: np.ndarray) -> np.ndarray:
    """What the model computes, by hand: the features standardised by the mean and (population)
    standard deviation of the run's training rows (the source's rows but those ``ctq validation``
    lists), the trained weights (of the exported file's inner model: dense 16 relu, then the
    output layer) in numpy float64, softmax probabilities or a value rescaled to the target's units
    by the training rows' target mean and standard deviation. No ctq statistics or build code."""
    val = f"public.pred_val_{task}"
    proc = cli(dsn, ctq_home, "validation", str(run_id), "--out", val, "--replace")
    assert proc.returncode == 0, proc.stderr
    cols = ", ".join(f"f{i}" for i in range(1, 9))
    rows = await conn.fetch(f"SELECT {cols}, target FROM public.pred_train WHERE id NOT IN (SELECT id FROM {val})")
    assert 2000 < len(rows) < 3000  # the validation rows are out
    train = np.array([[r[f"f{i}"] for i in range(1, 9)] for r in rows], np.float64)
    (inner,) = [layer for layer in model.layers if layer.get_weights() and layer.name != "ctq_normalization"]
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in inner.get_weights())
    h = np.maximum(((x - train.mean(axis=0)) / train.std(axis=0)) @ w1 + b1, 0.0)
    z = h @ w2 + b2
    if task == "classification":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    target = np.array([r["target"] for r in rows])
    return z[:, 0] * target.std() + target.mean()


async def test_predict_and_export_equal_a_numpy_forward_pass_and_return_text_classes(runs, exported, dsn, ctq_home,
                                                                                       conn):
    proc = cli(dsn, ctq_home, "predict", str(runs["classification"]), "--table", "public.pred_holdout",
               "--id-column", "id", "--out", "public.pred_out_cls", "--proba", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows"] == 500 and result["segments"] == 2 and result["prediction_type"] == "text"
    rows = await conn.fetch("SELECT id, prediction, probabilities FROM public.pred_out_cls ORDER BY id")
    ids, x, labels, _ = await holdout(conn)
    assert [r["id"] for r in rows] == ids  # every row once, with its own id
    keras_probs = exported["classification"].predict(x, verbose=0)
    db_probs = np.array([r["probabilities"] for r in rows])
    by_hand = await numpy_forward(conn, dsn, ctq_home, runs["classification"], exported["classification"],
                                  "classification", x.astype(np.float64))
    np.testing.assert_allclose(db_probs, by_hand, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras_probs, by_hand, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(db_probs.sum(axis=1), 1.0, rtol=1e-5)
    assert [r["prediction"] for r in rows] == [CLASSES[i] for i in np.argmax(keras_probs, axis=1)]
    assert set(r["prediction"] for r in rows) <= set(CLASSES)
    assert np.mean([p == t for p, t in zip((r["prediction"] for r in rows), labels)]) > 0.5  # chance: 1/3


async def test_regression_predictions_are_in_the_targets_units(runs, exported, dsn, ctq_home, conn):
    # two staging tables as a predict killed with -9 leaves them: one abandoned, one whose writer
    # is alive (it holds the table's advisory lock, as scoring._claim_stage does)
    from ctq.scoring import STAGE_LOCK_CLASS

    for t in ("aa", "bb"):
        await conn.execute(f"DROP TABLE IF EXISTS public.ctq_predict_{t:0>16}; "
                           f"CREATE TABLE public.ctq_predict_{t:0>16} (id int8, prediction float8)")
    live = '"public"."ctq_predict_00000000000000bb"'
    await conn.execute("SELECT pg_advisory_lock($1::int, hashtext($2))", STAGE_LOCK_CLASS, live)
    proc = cli(dsn, ctq_home, "predict", str(runs["regression"]), "--table", "public.pred_holdout",
               "--id-column", "ID", "--out", "public.pred_out_reg")  # ID finds id, as unquoted SQL folds
    assert proc.returncode == 0, proc.stderr
    left = [r["relname"] for r in await conn.fetch(
        "SELECT relname FROM pg_class WHERE relname LIKE 'ctq_predict_%' ORDER BY relname")]
    await conn.execute("SELECT pg_advisory_unlock($1::int, hashtext($2))", STAGE_LOCK_CLASS, live)
    await conn.execute("DROP TABLE public.ctq_predict_00000000000000bb")
    assert left == ["ctq_predict_00000000000000bb"]  # the abandoned one dropped, the live one kept
    rows = await conn.fetch("SELECT id, prediction FROM public.pred_out_reg ORDER BY id")
    _, x, _, target = await holdout(conn)
    db = np.array([r["prediction"] for r in rows])
    by_hand = await numpy_forward(conn, dsn, ctq_home, runs["regression"], exported["regression"], "regression",
                                  x.astype(np.float64))
    np.testing.assert_allclose(db, by_hand, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(exported["regression"].predict(x, verbose=0)[:, 0], by_hand, rtol=1e-4, atol=1e-3)
    # in the target's units (mean about 1000, spread in the hundreds), not standardised ones
    assert abs(db.mean() - target.mean()) < 0.5 * target.std()
    assert np.corrcoef(db, target)[0, 1] > 0.8


async def test_evaluate_matches_a_standalone_computation(runs, exported, dsn, ctq_home, conn):
    from ctq.indb import import_keras

    keras = import_keras()
    _, x, labels, target = await holdout(conn)
    # a predict killed with -9 left its staging table in another schema: evaluate drops it too
    await conn.execute("CREATE SCHEMA IF NOT EXISTS scratch; "
                       "CREATE TABLE scratch.ctq_predict_00000000000000cc (id int8, prediction text)")
    proc = cli(dsn, ctq_home, "evaluate", str(runs["classification"]), "--table", "public.pred_holdout", "--json")
    assert proc.returncode == 0, proc.stderr
    assert await conn.fetchval("SELECT to_regclass('scratch.ctq_predict_00000000000000cc')") is None
    got = json.loads(proc.stdout)
    y = np.array([CLASSES.index(v) for v in labels])
    probs = exported["classification"].predict(x, verbose=0)
    loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, probs)))
    assert got["rows"] == 500
    assert got["loss"] == pytest.approx(loss, rel=1e-4)
    assert got["accuracy"] == pytest.approx(float(np.mean(np.argmax(probs, axis=1) == y)), abs=1e-9)
    proc = cli(dsn, ctq_home, "evaluate", str(runs["regression"]), "--table", "public.pred_holdout", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    pred = exported["regression"].predict(x, verbose=0)[:, 0].astype(np.float64)
    assert got["loss"] == pytest.approx(float(np.mean((pred - target) ** 2)), rel=1e-3)
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(pred - target))), rel=1e-3)


async def test_evaluate_on_the_validation_rows_gives_the_recorded_validation_loss_also_with_l2(runs, dsn, ctq_home,
                                                                                                conn, tmp_path):
    """The leaderboard's val_loss is the loss on the validation rows that ``ctq evaluate`` computes on
    them (``ctq validation``), for a model with a weight penalty too: it counted the penalty (in the
    target's units), so metric: val_loss ranked an l2 model behind one that did worse on those rows
    (a user trial: 8.98 recorded vs 3.75 evaluated)."""
    grid = write_grid(tmp_path, GRID.format(name="pred-l2", table="public.pred_train", label="target",
                                            task="regression", metric="val_loss").replace(
        "- {name: small, layers: [{dense: 16, activation: relu}]}",
        "- {name: plain, layers: [{dense: 16, activation: relu}]}\n"
        "      - {name: penalised, layers: [{dense: 16, activation: relu, l2: 0.01}]}"))
    proc = cli(dsn, ctq_home, "train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    proc = cli(dsn, ctq_home, "validation", str(run_id), "--out", "public.pred_val_l2", "--replace")
    assert proc.returncode == 0, proc.stderr
    recorded = {r["model_id"]: r["val_loss"] for r in await conn.fetch(
        "SELECT model_id, val_loss FROM ctq.epochs WHERE run_id = $1 AND epoch = 1", run_id)}
    assert len(recorded) == 2
    for model_id, val_loss in recorded.items():
        proc = cli(dsn, ctq_home, "evaluate", str(run_id), "--model", str(model_id), "--table", "public.pred_val_l2",
                   "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["loss"] == pytest.approx(val_loss, rel=1e-3), model_id


@pytest.fixture(scope="module")
async def bad_tables(dsn):
    conn = await asyncpg.connect(dsn)
    for name, change in {
        "pred_nulls": "UPDATE {t} SET f3 = NULL WHERE id % 50 = 0",
        "pred_nan": "UPDATE {t} SET f5 = 'NaN' WHERE id % 70 = 0",
        "pred_null_id": "UPDATE {t} SET id = NULL WHERE id % 90 = 0",
        "pred_dup_id": "UPDATE {t} SET id = 10001 WHERE id = 10002",
        "pred_missing": "ALTER TABLE {t} DROP COLUMN f4",
        # beyond float4 once centred, and a numeric beyond float8: packing cannot encode them ('value
        # out of range: overflow', naming nothing: a user trial)
        "pred_huge": "UPDATE {t} SET f2 = 1e39 WHERE id % 100 = 0",
        "pred_vast": "ALTER TABLE {t} ALTER COLUMN f6 TYPE numeric; UPDATE {t} SET f6 = 1e400 WHERE id % 100 = 0",
    }.items():
        await conn.execute(f"DROP TABLE IF EXISTS public.{name}; CREATE TABLE public.{name} AS "
                           "SELECT * FROM public.pred_holdout LIMIT 200")
        await conn.execute(change.format(t=f"public.{name}"))
    await conn.execute("DROP TABLE IF EXISTS public.pred_existing; CREATE TABLE public.pred_existing (x int)")
    await conn.close()


@pytest.mark.parametrize("args, expected", [
    (["--table", "public.pred_nulls"], "column 'f3' has 4 NULL value(s) of 200 rows (e.g. the row with id 10000 in "
                                       "'f3')"),
    (["--table", "public.pred_nan"], "column 'f5' has NaN or infinite values, or values beyond the model's float32 "
                                     "inputs once centred (|x - mean| > 3.4e38) in 3 row(s) (e.g. the row with id 10010 "
                                     "in 'f5')"),
    (["--table", "public.pred_huge"], "column 'f2' has NaN or infinite values, or values beyond the model's float32 "
                                      "inputs once centred (|x - mean| > 3.4e38) in 2 row(s) (e.g. the row with id 10000 "
                                      "in 'f2')"),
    (["--table", "public.pred_vast"], "column 'f6' has NaN or infinite values, or values beyond"),
    (["--table", "public.pred_vast"], "in 2 row(s) (e.g. the row with id 10000 in 'f6')"),
    (["--table", "public.pred_null_id"], "id column has 2 NULL value(s)"),
    (["--table", "public.pred_dup_id"], "id column has 1 repeated value(s) (e.g. 10001)"),
    (["--table", "public.pred_missing"], "column 'f4' (a feature of model"),
    (["--id-column", "nope"], "column 'nope' (the id column) does not exist"),
    (["--table", "public.nowhere"], "--table public.nowhere: table does not exist"),
    (["--out", "public.pred_existing"], "exists; use --replace"),
    (["--out", "no_such_schema.pred"], "schema 'no_such_schema' does not exist"),
    (["--out", "public.pred_holdout", "--replace"], "is the table to score"),
    (["--model", "99"], "has no model 99"),
])
async def test_bad_input_exits_2_and_writes_nothing(runs, bad_tables, dsn, ctq_home, conn, args, expected):
    before = await conn.fetchval("SELECT count(*) FROM pg_class")
    options = {"--table": "public.pred_holdout", "--id-column": "id", "--out": "public.pred_bad_out"}
    options.update(dict(zip(args[::2], args[1::2])) if "--replace" not in args else {"--out": args[1]})
    flags = [a for pair in options.items() for a in pair] + (["--replace"] if "--replace" in args else [])
    proc = cli(dsn, ctq_home, "predict", str(runs["classification"]), *flags)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert await conn.fetchval("SELECT to_regclass('public.pred_bad_out')") is None
    assert await conn.fetchval("SELECT count(*) FROM pg_class") == before  # no staging table left either
    assert await conn.fetchval("SELECT count(*) FROM public.pred_existing") == 0


async def test_scoring_and_export_upgrade_the_server_code_first_and_wait_for_live_runs(runs, dsn, ctq_home, conn,
                                                                                      tmp_path):
    """predict, evaluate and export run this version's server code, so they install it over an
    earlier ctq's first; while a run is live that cannot be done, and each says so, exit 3 (export
    read the state with the old code: the server's AttributeError, exit 1, a user trial of an
    upgrade)."""
    import asyncpg

    from ctq import catalog

    run_id = runs["classification"]
    sha = await conn.fetchval("SELECT value FROM ctq.meta WHERE key = 'install_sha'")
    await conn.execute("""UPDATE ctq.meta SET value = '"an earlier ctq"' WHERE key = 'install_sha'""")
    await conn.execute("UPDATE ctq.runs SET status = 'running' WHERE run_id = $1", run_id)
    driver = await asyncpg.connect(dsn)
    try:
        assert await catalog.lock_run(driver, run_id)  # as a live coordinator holds it
        for command in (["export", str(run_id), str(tmp_path / "m.keras")],
                        ["evaluate", str(run_id), "--table", "public.pred_holdout"],
                        ["predict", str(run_id), "--table", "public.pred_holdout", "--id-column", "id", "--out",
                         "public.pred_wait_out"]):
            proc = cli(dsn, ctq_home, *command)
            assert proc.returncode == 3, proc.stderr
            assert f"run {run_id} is training now" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    finally:
        await driver.close()
        await conn.execute("UPDATE ctq.runs SET status = 'succeeded' WHERE run_id = $1", run_id)
    proc = cli(dsn, ctq_home, "export", str(run_id), str(tmp_path / "m.keras"))
    assert proc.returncode == 0, proc.stderr
    assert await conn.fetchval("SELECT value FROM ctq.meta WHERE key = 'install_sha'") == sha  # upgraded
    # and says so (the first command after a new version's checkout upgraded without a word: a user trial)
    assert f"note: ctq's server code in this database upgraded to this ctq's (an earlier c -> {json.loads(sha)[:12]})" \
        in proc.stderr, proc.stderr


async def test_export_of_a_model_whose_state_was_lost_says_so(runs, dsn, ctq_home, conn, tmp_path):
    """A model the catalog says has trained whose state is gone (a working state lost in a host
    crash, not yet rolled back by a resume): exit 1, one line, no file (a traceback before)."""
    run_id = runs["regression"]
    await conn.execute("CREATE TEMP TABLE kept_states AS SELECT * FROM ctq.model_states WHERE run_id = $1; "
                       "DELETE FROM ctq.model_states WHERE run_id = $1".replace("$1", str(run_id)))
    try:
        proc = cli(dsn, ctq_home, "export", str(run_id), str(tmp_path / "lost.keras"))
    finally:
        await conn.execute("INSERT INTO ctq.model_states SELECT * FROM kept_states; DROP TABLE kept_states")
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "its state after its recorded hops is not stored" in \
        proc.stderr and f"ctq train --resume {run_id}" in proc.stderr, proc.stderr
    assert not (tmp_path / "lost.keras").exists()


async def test_replace_and_refusals_of_export_and_proba(runs, dsn, ctq_home, conn, tmp_path):
    run_id = str(runs["classification"])
    await conn.execute("DROP TABLE IF EXISTS public.pred_replace; CREATE TABLE public.pred_replace (x int)")
    # what the old table's readers hold carries over (a nightly --replace took a dashboard's SELECT
    # away: a user trial), and its comment; not its indexes (docs/predict-export.md)
    await conn.execute("DROP ROLE IF EXISTS pred_dashboard; CREATE ROLE pred_dashboard; "
                       "GRANT SELECT ON public.pred_replace TO pred_dashboard; "
                       "GRANT SELECT, INSERT ON public.pred_replace TO PUBLIC; "
                       "COMMENT ON TABLE public.pred_replace IS 'nightly scores, it''s read by BI'")
    base = ["predict", run_id, "--table", "public.pred_holdout", "--id-column", "id", "--out", "public.pred_replace"]
    assert cli(dsn, ctq_home, *base).returncode == 2
    assert cli(dsn, ctq_home, *base, "--replace").returncode == 0
    assert await conn.fetchval("SELECT count(*) FROM public.pred_replace") == 500
    assert await conn.fetchval("SELECT has_table_privilege('pred_dashboard', 'public.pred_replace', 'SELECT')")
    assert not await conn.fetchval("SELECT has_table_privilege('pred_dashboard', 'public.pred_replace', 'UPDATE')")
    assert sorted(await conn.fetchval("SELECT array_agg(privilege_type::text) FROM information_schema.role_table_grants "
                                      "WHERE table_name = 'pred_replace' AND grantee = 'PUBLIC'")) == ["INSERT", "SELECT"]
    assert await conn.fetchval("SELECT obj_description('public.pred_replace'::regclass)") == "nightly scores, it's read by BI"
    # a view or a foreign key on --out: the server would refuse the drop, after every row is
    # scored; exit 2 naming them, before scoring
    await conn.execute("CREATE VIEW public.pred_replace_v AS SELECT * FROM public.pred_replace; "
                       "ALTER TABLE public.pred_replace ADD UNIQUE (id); "
                       "CREATE TABLE public.pred_replace_ref (id bigint REFERENCES public.pred_replace (id))")
    proc = cli(dsn, ctq_home, *base, "--replace")
    await conn.execute("DROP VIEW public.pred_replace_v; DROP TABLE public.pred_replace_ref")
    assert proc.returncode == 2, proc.stderr
    assert "cannot replace public.pred_replace: constraint pred_replace_ref_id_fkey on table pred_replace_ref, " \
           "view pred_replace_v depend on it" in proc.stderr, proc.stderr
    proc = cli(dsn, ctq_home, "predict", str(runs["regression"]), "--table", "public.pred_holdout", "--id-column",
               "id", "--out", "public.pred_x", "--proba")
    assert proc.returncode == 2 and "--proba" in proc.stderr
    await conn.execute("DROP TABLE IF EXISTS public.pred_new_class; CREATE TABLE public.pred_new_class AS "
                       "SELECT * FROM public.pred_holdout; UPDATE public.pred_new_class SET label = 'huge' WHERE id = 10003")
    proc = cli(dsn, ctq_home, "evaluate", run_id, "--table", "public.pred_new_class")
    assert proc.returncode == 2 and "label column 'label' has values that are not one of the model's classes " \
        "(high, low, mid) in 1 row(s)" in proc.stderr, proc.stderr
    path = tmp_path / "m.keras"
    path.write_text("keep me")
    proc = cli(dsn, ctq_home, "export", run_id, str(path))
    assert proc.returncode == 2 and "use --force" in proc.stderr and path.read_text() == "keep me"
    proc = cli(dsn, ctq_home, "export", run_id, str(tmp_path / "m.h5"))
    assert proc.returncode == 2 and ".keras" in proc.stderr
    # a directory no one may create files in (root neither): one line, not mkstemp's traceback
    proc = cli(dsn, ctq_home, "export", run_id, "/proc/m.keras")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: PATH /proc/m.keras: cannot write in /proc (No such file or directory)"], proc.stderr
    link = tmp_path / "dangling.keras"
    link.symlink_to(tmp_path / "nowhere")
    proc = cli(dsn, ctq_home, "export", run_id, str(link))
    assert proc.returncode == 2 and "file exists; use --force" in proc.stderr and link.is_symlink()
    # the file is as readable as any the user creates (umask), not mkstemp's 0600
    proc = cli(dsn, ctq_home, "export", run_id, str(tmp_path / "shared.keras"))
    assert proc.returncode == 0, proc.stderr
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "shared.keras").stat().st_mode & 0o777 == 0o666 & ~mask


async def test_a_model_still_in_training_is_scored_with_a_note(runs, dsn, ctq_home, conn, tmp_path):
    """Scoring a model of an interrupted run is allowed (a look at a long run's leader), with a note
    that these are its weights so far, never silently as if it were the final model."""
    run_id = runs["classification"]
    finished = await conn.fetchrow("SELECT status, epochs_done FROM ctq.models WHERE run_id = $1", run_id)
    # as an interrupted run leaves its catalog: the run interrupted, its model after epoch 1 of 2
    await conn.execute("UPDATE ctq.runs SET status = 'interrupted' WHERE run_id = $1", run_id)
    await conn.execute("UPDATE ctq.models SET status = 'training', epochs_done = 1 WHERE run_id = $1", run_id)
    try:
        note = (f"model 1 of run {run_id} has not finished training (1 of 2 epochs done; run {run_id} is "
                "interrupted): these are its weights so far")
        for args in (("export", str(run_id), str(tmp_path / "early.keras"), "--json"),
                     ("evaluate", str(run_id), "--table", "public.pred_holdout", "--json")):
            proc = cli(dsn, ctq_home, *args)
            assert proc.returncode == 0, proc.stderr
            assert f"note: {note}" in proc.stderr and json.loads(proc.stdout)["notes"] == [note]
    finally:
        await conn.execute("UPDATE ctq.runs SET status = 'succeeded' WHERE run_id = $1", run_id)
        await conn.execute("UPDATE ctq.models SET status = $2, epochs_done = $3 WHERE run_id = $1", run_id,
                           finished["status"], finished["epochs_done"])
    proc = cli(dsn, ctq_home, "export", str(run_id), str(tmp_path / "final.keras"), "--json")
    assert proc.returncode == 0 and "note:" not in proc.stderr and json.loads(proc.stdout)["notes"] == []


async def test_a_terminal_is_told_what_scoring_waits_for(runs, dsn, ctq_home):
    """evaluate (like predict, report and doctor) waits seconds on the server's Keras import: on a
    terminal a spinner says so meanwhile; the result line is unchanged on stdout."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import read_terminal

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", "evaluate", str(runs["classification"]), "--table",
                             "public.pred_holdout"], stdout=subprocess.PIPE, stderr=slave,
                            env=dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home), TERM="xterm"))
    os.close(slave)
    shown = read_terminal(master)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    assert "evaluating on public.pred_holdout: checking its rows" in shown.decode(errors="replace")
    assert out.decode().startswith("model ") and "(500 rows): loss " in out.decode()


async def test_a_model_whose_hops_moved_on_since_the_scoring_snapshot_is_scored_from_its_newest_state(
        small_table, cluster, dsn, ctq_home, conn, tmp_path):
    """Scoring reads the model's state in a snapshot taken before its segments import Keras: a
    running run's hops have moved on by then, and each hop deletes its model's state files older
    than the one it started from, so the file of the hops the snapshot counts was gone (a user
    trial: 11 tries at `ctq predict` of a running run, all 'model state is incomplete: 14 of 14
    arrays missing', exit 1). Here an interrupted run's last state file is left as the next hops
    would leave it (renamed to one hop further, the older ones deleted): scored from it."""
    import asyncio
    from pathlib import Path

    from test_reliability import start_train, wait_for_hops

    grid = write_grid(tmp_path, ONE_MODEL_ON_SMALL.format(name="moved-on", batch=16, epochs=5) + "checkpoint_minutes: 60\n")
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "moved-on", 3)
    proc.kill()
    proc.wait(timeout=30)
    await asyncio.sleep(1)  # a hop in flight at the kill commits or dies
    hops = await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
    assert not await conn.fetchval("SELECT count(*) FROM ctq.model_states WHERE run_id = $1", run_id)  # no checkpoint
    folder = Path(cluster.data_dir, "ctq_states", str(await conn.fetchval(
        "SELECT oid FROM pg_database WHERE datname = current_database()")), str(run_id))
    os.rename(folder / f"1.{hops}", folder / f"1.{hops + 1}")
    for older in folder.glob("1.*"):
        if older.name != f"1.{hops + 1}":
            older.unlink()
    proc = cli(dsn, ctq_home, "evaluate", str(run_id), "--table", "public.small", "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"model 1 of run {run_id} has not finished training" in json.loads(proc.stdout)["notes"][0]
    assert f"run {run_id} is stale)" in json.loads(proc.stdout)["notes"][0]  # (its coordinator was killed)
    assert json.loads(proc.stdout)["rows"] == 3000


async def test_a_view_whose_rows_change_between_reads_is_refused_and_nothing_is_written(runs, dsn, ctq_home, conn):
    """Each scoring segment reads a view in its own transaction and scores the rows whose content
    key falls on it: a volatile column (clock_timestamp()) made some rows scored twice and others
    not, exit 0 (a user trial: 10 predictions for 10 rows, 8 distinct ids). Refused before
    scoring; a view whose rows are stable scores as before."""
    await conn.execute("CREATE OR REPLACE VIEW public.pred_changing AS SELECT *, clock_timestamp() AS seen_at "
                       "FROM public.pred_holdout")
    await conn.execute("CREATE OR REPLACE VIEW public.pred_stable AS SELECT * FROM public.pred_holdout WHERE id > 0")
    run_id = str(runs["classification"])
    for args in (("predict", run_id, "--table", "public.pred_changing", "--id-column", "id", "--out",
                  "public.pred_changing_out"), ("evaluate", run_id, "--table", "public.pred_changing")):
        proc = cli(dsn, ctq_home, *args)
        assert proc.returncode == 2, proc.stderr
        assert "--table: the rows of view public.pred_changing differ between two reads" in proc.stderr, proc.stderr
    assert await conn.fetchval("SELECT to_regclass('public.pred_changing_out')") is None
    proc = cli(dsn, ctq_home, "predict", run_id, "--table", "public.pred_stable", "--id-column", "id", "--out",
               "public.pred_stable_out", "--json")
    assert proc.returncode == 0, proc.stderr
    assert await conn.fetchval("SELECT count(DISTINCT id) FROM public.pred_stable_out") == \
        await conn.fetchval("SELECT count(*) FROM public.pred_holdout WHERE id > 0")
    await conn.execute("DROP VIEW public.pred_changing, public.pred_stable; DROP TABLE public.pred_stable_out")


async def test_an_empty_table_predicts_into_an_empty_table_and_is_not_evaluated(runs, dsn, ctq_home, conn):
    """A nightly batch without new rows is not bad input: ctq predict writes an empty --out (exit 0,
    rows 0; it was exit 2, failing the cron job: a user trial); ctq evaluate has no loss or metric
    to give of no rows (exit 2)."""
    await conn.execute("DROP TABLE IF EXISTS public.pred_none, public.pred_none_out; "
                       "CREATE TABLE public.pred_none AS SELECT * FROM public.pred_holdout WHERE false")
    run_id = str(runs["classification"])
    proc = cli(dsn, ctq_home, "predict", run_id, "--table", "public.pred_none", "--id-column", "id", "--out",
               "public.pred_none_out", "--proba", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 0
    assert await conn.fetchval("SELECT count(*) FROM public.pred_none_out") == 0
    assert [r["attname"] for r in await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'public.pred_none_out'::regclass AND attnum > 0 "
        "ORDER BY attnum")] == ["id", "prediction", "probabilities"]
    proc = cli(dsn, ctq_home, "evaluate", run_id, "--table", "public.pred_none")
    assert proc.returncode == 2 and "--table public.pred_none: table has no rows to evaluate the model on" in \
        proc.stderr, proc.stderr
    await conn.execute("DROP TABLE public.pred_none, public.pred_none_out")


async def test_a_quoted_id_column_is_taken_as_sql_quotes_it(runs, dsn, ctq_home, conn):
    """--id-column "Key" (quoted, as --table takes a quoted name) is the column Key; key is not (a
    user trial: the quoted name was refused, and the message named the table as the option)."""
    await conn.execute('DROP TABLE IF EXISTS public.pred_keyed, public.pred_keyed_out; CREATE TABLE public.pred_keyed '
                       'AS SELECT id AS "Key", f1, f2, f3, f4, f5, f6, f7, f8 FROM public.pred_holdout LIMIT 50')
    run_id = str(runs["classification"])
    base = ["predict", run_id, "--table", "public.pred_keyed", "--out", "public.pred_keyed_out", "--replace"]
    assert cli(dsn, ctq_home, *base, "--id-column", '"Key"').returncode == 0
    assert await conn.fetchval('SELECT count(DISTINCT id) FROM public.pred_keyed_out') == 50
    refused = cli(dsn, ctq_home, *base, "--id-column", "key")
    assert refused.returncode == 2 and "--id-column (in --table public.pred_keyed): column 'key' (the id column) " \
        "does not exist (columns: Key, f1" in refused.stderr, refused.stderr
    await conn.execute("DROP TABLE public.pred_keyed, public.pred_keyed_out")

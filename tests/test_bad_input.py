"""Bad configuration and bad data: exit code 2, a message naming the problem, nothing written.

Pure-YAML mistakes are covered exhaustively in test_config.py; these cases go through the real
CLI and the real database (missing tables and columns, NULLs, types, code-carrying models).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from conftest import create_table, write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")

BASE = """
    name: bad
    data:
      table: {table}
      features: {features}
      label: {label}
      task: {task}
    models:
      - name: m
        {model}
    epochs: {epochs}
    metric: {metric}
"""
GOOD = dict(table="public.bad_src", features="[f1, f2, f3]", label="label", task="classification",
            model="layers: [{dense: 4}]", metric="val_loss", epochs="1")

LAMBDA_MODEL = {
    "module": "keras", "class_name": "Sequential", "registered_name": None,
    "config": {"name": "s", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 3]}},
        {"module": "keras.layers", "class_name": "Lambda",
         "config": {"function": {"class_name": "__lambda__", "config": {"code": "x"}}}},
    ]},
}

CASES = {
    "unknown key": ({"metric": "val_loss\n    epoch: 3"}, "epoch"),
    "missing table": ({"table": "public.no_such_table"}, "no_such_table"),
    "missing schema": ({"table": "nowhere.bad_src"}, "nowhere.bad_src"),
    "missing feature column": ({"features": "[f1, nope]"}, "nope"),
    "missing label": ({"label": "target"}, "target"),
    "NULL feature": ({"features": "[f1, with_null]"}, "with_null"),
    "NULL label": ({"label": "label_null"}, "label_null"),
    "NULL feature and label": ({"features": "[f1, with_null]", "label": "label_null"},
                               "grid.yaml:data: 2 columns have NULL values"),  # not data.label alone
    "text feature": ({"features": "[f1, word]"}, "word"),
    "text label": ({"label": "word"}, "word"),
    "identifier with quote and semicolon": ({"features": "['f1\"; DROP TABLE public.bad_src; --']"}, "DROP TABLE"),
    "regression metric on classification": ({"metric": "val_mae"}, "metric"),
    "negative epochs": ({"epochs": "-1"}, "epochs"),
    "lambda layer": ({"model": "keras_json: lambda.json"}, "Lambda"),
    "missing keras_json": ({"model": "keras_json: missing.json"}, "missing.json"),
    "label with a single class": ({"label": "one_class"}, "single class"),
    "constant regression target": ({"label": "one_class", "task": "regression", "metric": "val_mae"},
                                   "column 'one_class' has the same value in every training row; nothing to learn"),
    "NaN feature": ({"features": "[f1, with_nan]"}, "with_nan"),
    "infinite feature": ({"features": "[f1, with_inf]"}, "data.features: column 'with_inf' has NaN or infinite"),
    "feature too large to normalise": ({"features": "[f1, huge]"},
                                       "data.features: column 'huge' has values too large to normalise"),
    "label too large to normalise": ({"label": "huge", "task": "regression", "metric": "val_mae"},
                                     "data.label: column 'huge' has values too large to normalise"),
    "bad YAML": ({"metric": "val_loss\n    models: [unclosed"}, "line"),
    "wrong task": ({"task": "clustering"}, "data.task"),
    "features not a list": ({"features": "f1"}, "data.features"),
    "empty features": ({"features": "[]"}, "data.features"),
    "label also a feature": ({"features": "[f1, label]"}, "label"),
    "bad layer units": ({"model": "layers: [{dense: abc}]"}, "dense"),
    "unknown layer kind": ({"model": "layers: [{conv: 3}]"}, "conv"),
    "model with layers and keras_json": ({"model": "layers: [{dense: 4}]\n        keras_json: lambda.json"},
                                         "keras_json"),
    "empty grid": ({"metric": "val_loss\n    search: {space: {batch_size: []}}"}, "batch_size"),
    "random search without samples": ({"metric": "val_loss\n    search: {method: random}"}, "samples"),
    "zero segments": ({"metric": "val_loss\n    segments: 0"}, "segments"),
    # the test server's max_connections is 64: the run failed after packing, exit 1
    "more segments than the server's connections": ({"metric": "val_loss\n    segments: 150"},
                                                     "segments: 150 segments need 152 sessions at once"),
    # numeric in PostgreSQL's type categories, but no cast to a float: refused by type, naming the column
    "money feature": ({"features": "[f1, price]"}, "'price' has type money, which ctq cannot read as a number"),
    "oid feature": ({"features": "[f1, ident]"}, "'ident' has type oid"),
    "money array feature": ({"features": "[prices]"}, "'prices' has type money[]"),
    "money label": ({"label": "price", "task": "regression", "metric": "val_mae"}, "data.label: column 'price'"),
    # names as unquoted SQL folds them: F1 finds f1 (test_train), but age does not find "Age"
    "lower case of a mixed-case column": ({"features": "[f1, age]"}, "column 'age' does not exist"),
    # F1 finds f1: the same column twice (the label check folded case, the duplicate check did not)
    "one feature twice in two cases": ({"features": "[f1, f2, F1]"},
                                       "data.features[2]: 'F1' is column 'f1' again (data.features[0])"),
    # packing writes one dimension's array header: a 2 x 2 array failed the run as "NULL elements"
    "two-dimensional array feature": ({"features": "[grid]"}, "array column 'grid' holds 2-dimensional arrays"),
    # out of double precision's range as numeric (either way), and of float32's once centred: the
    # column named (PostgreSQL's 401-digit number, or "value out of range: overflow", was all it said)
    "numeric beyond float8": ({"features": "[f1, vast]"}, "data.features: column 'vast' has values beyond double "
                                                          "precision's range"),
    "numeric below float8": ({"features": "[f1, minute]"}, "data.features: column 'minute' has values beyond double "
                                                           "precision's range"),
    "float8 beyond float32": ({"features": "[f1, over32]"}, "data.features: column 'over32' has values beyond "
                                                            "float32's range once centred"),
    "regression target beyond float32": ({"label": "over32", "task": "regression", "metric": "val_mae"},
                                         "data.label: column 'over32' has values beyond float32's range"),
    # every column at fault named at once (a user trial took 8 runs to find them one by one)
    "two text features": ({"features": "[f1, word, stamp]"},
                          "data.features: 2 columns are not numbers: 'word' (text), 'stamp' (timestamp with time zone)"),
    "NULL and NaN features": ({"features": "[f1, with_null, with_nan, with_inf]"},
                              "NULL value(s) of 200 rows; 2 columns have NaN or infinite "
                              "values: 'with_nan', 'with_inf'; filter or impute them"),
    "timestamp regression target": ({"label": "stamp", "task": "regression", "metric": "val_mae"},
                                    "data.label: column 'stamp' has type timestamp with time zone, not a number; a "
                                    "regression target is a number"),
    "enum label": ({"label": "mood"}, "column 'mood' has type bad_mood: use a number, a boolean or text (class "
                                      "values); cast it in a view, e.g. \"mood\"::text"),
    "array beside a scalar feature": ({"features": "[fixed, f1]"}, "data.features[0]: column 'fixed' has type double "
                                                                   "precision[]: an array column must be the only "
                                                                   "feature"),
    # a run ranked on validation rows it does not have "succeeded" with no best model
    "no validation row for a val_ metric": ({"task": "classification\n      validation_fraction: 0.001"},
                                            "of the 200 rows leaves no validation row"),
    # a view is keyed by its rows' content, read once by each session: one whose rows change between
    # reads would lose some rows and pack others twice (a user trial, scoring: 8 distinct ids of 10)
    "view with a volatile column": ({"table": "public.bad_volatile"},
                                    "data.table: the rows of view public.bad_volatile differ between two reads"),
    "view with the transaction's time": ({"table": "public.bad_now"},
                                         "data.table: the rows of view public.bad_now differ between two reads"),
}


@pytest.fixture(scope="module")
async def bad_source(dsn):
    import asyncpg

    from ctq import catalog
    from ctq.engines import detect

    conn = await asyncpg.connect(dsn)
    await create_table(conn, "public.bad_src", 200)
    await conn.execute("""
        ALTER TABLE public.bad_src ADD COLUMN with_null float8, ADD COLUMN label_null int, ADD COLUMN word text,
            ADD COLUMN one_class int DEFAULT 1, ADD COLUMN with_nan float8 DEFAULT 0,
            ADD COLUMN price money DEFAULT 1.5, ADD COLUMN ident oid DEFAULT 7,
            ADD COLUMN prices money[] DEFAULT '{1.5, 2}', ADD COLUMN "Age" float8 DEFAULT 1,
            ADD COLUMN with_inf float8, ADD COLUMN huge float8, ADD COLUMN grid float8[] DEFAULT '{{1,2},{3,4}}',
            ADD COLUMN stamp timestamptz DEFAULT now(), ADD COLUMN fixed float8[] DEFAULT '{1,2}',
            ADD COLUMN vast numeric DEFAULT 1, ADD COLUMN minute numeric DEFAULT 1, ADD COLUMN over32 float8 DEFAULT 1;
        UPDATE public.bad_src SET vast = 1e400 WHERE f1 > 1.5;
        UPDATE public.bad_src SET minute = 1e-400 WHERE f1 > 1.5;
        UPDATE public.bad_src SET over32 = 1e39 WHERE f1 > 1.5;
        DROP TYPE IF EXISTS bad_mood CASCADE;
        CREATE TYPE bad_mood AS ENUM ('sad', 'ok');
        ALTER TABLE public.bad_src ADD COLUMN mood bad_mood DEFAULT 'ok';
        CREATE OR REPLACE VIEW public.bad_volatile AS SELECT *, random() AS drawn FROM public.bad_src;
        CREATE OR REPLACE VIEW public.bad_now AS SELECT *, now() AS seen_at FROM public.bad_src;
        UPDATE public.bad_src SET with_null = CASE WHEN f1 > 0 THEN f1 END, label_null = CASE WHEN f2 > 0 THEN 1 END,
            word = 'w', with_nan = CASE WHEN f3 > 1 THEN 'NaN'::float8 ELSE f3 END,
            with_inf = CASE WHEN f3 > 1 THEN '-Infinity'::float8 ELSE f3 END,
            huge = CASE WHEN f1 > 1 THEN 1e200 ELSE f1 END;
    """)
    # installed, as for every run but a database's first: the segments preload Keras during the
    # source check (a database without ctq: test_bad_input_in_a_database_without_ctq_installs_nothing)
    await catalog.ensure_installed(conn, await detect(conn))
    await conn.close()
    return "public.bad_src"


async def count_runs(conn) -> int:
    """-1 while ctq is not installed at all (bad input must not install it either)."""
    if await conn.fetchval("SELECT to_regclass('ctq.runs')") is None:
        return -1
    return await conn.fetchval("SELECT count(*) FROM ctq.runs")


async def snapshot(conn) -> dict:
    return {
        "runs": await count_runs(conn),
        "packs": await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'ctq_data'"),
        "source_rows": await conn.fetchval("SELECT count(*) FROM public.bad_src"),
    }


async def segment_sessions(conn, wait: float = 0.5) -> int:
    """ctq's segment sessions still there ``wait`` seconds on (a terminated backend takes a few
    ms to go): a refused run's preload went on importing Keras for a second after ctq exited."""
    deadline = time.monotonic() + wait
    while True:
        left = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'ctq segment %'")
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_input_exits_2_and_writes_nothing(case, bad_source, tmp_path, run_cli, conn):
    overrides, expected = CASES[case]
    (tmp_path / "lambda.json").write_text(json.dumps(LAMBDA_MODEL))
    grid = write_grid(tmp_path, BASE.format(**{**GOOD, **overrides}))
    before = await snapshot(conn)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert expected in proc.stderr, proc.stderr
    assert f"error: {grid}:" in proc.stderr, proc.stderr  # which grid file, data errors included
    doc = json.loads(proc.stdout)  # --json: the error as the one JSON document on stdout
    assert (doc["status"], doc["exit_code"], doc["run_id"]) == ("error", 2, None) and expected in doc["error"]
    assert await snapshot(conn) == before
    assert await segment_sessions(conn) == 0, "a refused run left a segment's backend working"


async def test_bad_input_in_a_database_without_ctq_installs_nothing(cluster, conn, tmp_path, run_cli):
    """A run refused at its source check in a database where ctq is not installed leaves it so
    (ctq installs itself after the check)."""
    import asyncpg

    await conn.execute("DROP DATABASE IF EXISTS bad_fresh")
    await conn.execute("CREATE DATABASE bad_fresh")
    base, query = cluster.dsn.split("?", 1)
    fresh = f"{base.rsplit('/', 1)[0]}/bad_fresh?{query}"
    other = await asyncpg.connect(fresh)
    try:
        await create_table(other, "public.bad_src", 200)
        await other.execute("ALTER TABLE public.bad_src ADD COLUMN word text DEFAULT 'w'")
        grid = write_grid(tmp_path, BASE.format(**{**GOOD, "features": "[f1, word]"}))
        proc = run_cli("train", str(grid), env={"CTQ_DSN": fresh})
        assert proc.returncode == 2 and "'word'" in proc.stderr, proc.stderr
        assert await count_runs(other) == -1 and await other.fetchval("SELECT to_regnamespace('ctq') IS NULL")
    finally:
        await other.close()
        await conn.execute("DROP DATABASE bad_fresh")


async def server_train_step(conn, arch):
    """Call the training aggregate directly, on a marker row, as if a config got past the client."""
    import asyncpg

    from ctq import catalog
    from ctq.engines import detect
    from ctq.rules import HopRequest, Hyperparameters, PackStats

    await catalog.ensure_installed(conn, await detect(conn))
    params = HopRequest(action="train", pack_id="0", task="classification", cores=[], metric="accuracy",
                        stats=PackStats(input_dim=3, n_outputs=2, mean=[0, 0, 0], std=[1, 1, 1],
                                        class_values=[0, 1]),
                        arch=arch, hyper=Hyperparameters(), seed=1)
    with pytest.raises(asyncpg.PostgresError) as info:
        await conn.fetchval("SELECT ctq.train_step(0, -1, 0, ''::bytea, ''::bytea, ''::bytea, NULL, NULL, NULL, $1)",
                            params.to_json())
    return info.value


async def test_a_lambda_layer_that_got_past_the_client_is_refused_by_the_server(small_table, conn):
    """The server's own check (before Keras sees the config) refuses a Lambda layer."""
    error = await server_train_step(conn, {"keras_json": LAMBDA_MODEL})
    assert error.sqlstate == "CTQ01"
    assert "Lambda" in error.message


def _with_dense_config(extra: dict) -> dict:
    """LAMBDA_MODEL with its Lambda layer replaced by a Dense layer carrying ``extra``."""
    model = json.loads(json.dumps(LAMBDA_MODEL))
    model["config"]["layers"][1] = {"module": "keras.layers", "class_name": "Dense",
                                    "config": {"units": 2, **extra}}
    return model


# Configs carrying code without a Lambda layer: before the server ran the client's scan (ctq.rules,
# shipped beside the server code), its own looked only for Lambda layers and lambdas, and left
# these to Keras (safe mode catches the first only).
HIDDEN_CODE = {
    "a lambda as an activation": ({"activation": {"class_name": "__lambda__", "config": {"value": ["x", None, None]}}},
                                  "serialized lambda"),
    "an object from module os": ({"activation": {"module": "os", "class_name": "function", "config": "system",
                                                 "registered_name": "system"}}, "module 'os'"),
    "a code string": ({"name": "__import__('os').system('id')"}, "__import__"),
    "a TFOpLambda layer": ({"inner": {"class_name": "TFOpLambda", "config": {}}}, "TFOpLambda"),
}


@pytest.mark.parametrize("case", sorted(HIDDEN_CODE))
async def test_code_hidden_in_a_config_is_refused_by_client_and_server_alike(case, small_table, conn):
    """The client (grid.yaml's keras_json) and the server (a call that skipped the client) run the
    one scan, so each refuses what the other does, naming the same thing."""
    from ctq import config

    extra, words = HIDDEN_CODE[case]
    model = _with_dense_config(extra)
    assert words in config.find_code(model)
    error = await server_train_step(conn, {"keras_json": model})
    assert error.sqlstate == "CTQ01"
    assert "carries Python code" in error.message and words in error.message, error.message


async def test_usage_errors(run_cli, tmp_path):
    missing = run_cli("train", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "nope.yaml" in missing.stderr
    unknown_run = run_cli("models", "987654")
    assert unknown_run.returncode == 2
    assert "987654" in unknown_run.stderr
    # a run name is printed by ctq runs: a terminal escape in it is refused, as in grid.yaml's name
    (tmp_path / "g.yaml").write_text(BASE.format(**GOOD))
    escape = run_cli("train", str(tmp_path / "g.yaml"), "--name", "x\x1b[2Jy")
    assert escape.returncode == 2 and "--name: contains a control character '\\x1b'" in escape.stderr, escape.stderr
    # blank, or 10,000 characters, were accepted (a user trial): a name is shown in every listing
    for name, words in (("   ", "--name: is blank"), ("n" * 10_000, "--name: is 10000 characters long; at most 200")):
        proc = run_cli("train", str(tmp_path / "g.yaml"), "--name", name)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr[:300]


async def test_a_request_with_a_field_the_server_does_not_know_is_refused(small_table, conn):
    """The hop's request is typed on both sides (ctq.rules.HopRequest): a field the server does not
    know (a client of another ctq version) is an error naming it, never silently dropped."""
    import asyncpg

    from ctq import catalog
    from ctq.engines import detect
    from ctq.rules import HopRequest, Hyperparameters, PackStats

    await catalog.ensure_installed(conn, await detect(conn))
    request = json.loads(HopRequest(action="train", pack_id="0", task="classification", metric="accuracy",
                                    stats=PackStats(input_dim=3, n_outputs=2, mean=[0] * 3, std=[1] * 3),
                                    arch={"layers": []}, hyper=Hyperparameters()).to_json())
    with pytest.raises(asyncpg.PostgresError) as info:
        await conn.fetchval("SELECT ctq.train_step(0, -1, 0, ''::bytea, ''::bytea, ''::bytea, NULL, NULL, NULL, $1)",
                            json.dumps({**request, "learning_schedule": "cosine"}))
    assert "learning_schedule" in info.value.message
    with pytest.raises(TypeError, match="learning_schedule"):
        HopRequest.from_json(json.dumps({**request, "learning_schedule": "cosine"}))


async def test_a_run_that_cannot_start_leaves_nothing_behind(bad_source, tmp_path, dsn, conn):
    """A run created, then refused before any coordinator drove it (here the server refuses a
    setting the client let through: a budget past the integer column, as grid.yaml checks it now),
    was left 'running' for ever: stale, and what --resume auto then picked every night. It is removed."""
    import dataclasses

    import asyncpg

    from ctq import api
    from ctq.config import load_config

    cfg = load_config(write_grid(tmp_path, BASE.format(**GOOD)))
    await api.train(cfg, dsn)  # installed, packed: what is left to write is the run
    before = await snapshot(conn)
    cfg = dataclasses.replace(cfg, memory_budget_mb=30000000000, raw={**cfg.raw, "memory_budget_mb": 30000000000})
    with pytest.raises(asyncpg.NumericValueOutOfRangeError, match="out of range for type integer"):
        await api.train(cfg, dsn)
    assert await snapshot(conn) == before


async def test_a_preload_stops_at_a_cancel_while_it_imports_keras(dsn, conn):
    """The segments' preload (ctq.probe) imports Keras: a second of CPU that runs no server code,
    so a cancel or a terminate (a refused run's, end_preloads) was seen only once the import had
    finished. It is seen within a poll now."""
    import asyncpg

    from ctq import catalog
    from ctq.engines import detect

    await catalog.ensure_installed(conn, await detect(conn))
    fresh = await asyncpg.connect(dsn)  # a new backend: Keras not imported yet
    try:
        probe = asyncio.ensure_future(fresh.fetchval("SELECT ctq.probe()"))
        await asyncio.sleep(0.2)
        cancelled = time.monotonic()
        assert await conn.fetchval("SELECT pg_cancel_backend($1)", fresh.get_server_pid())
        with pytest.raises(asyncpg.QueryCanceledError):
            await probe
        assert time.monotonic() - cancelled < 0.4, "the cancel waited for the import"
    finally:
        await fresh.close()

"""Real users' tables and settings (issue 9): small segments, boolean labels, large regression
targets, ties in the ranking, a database-wide statement_timeout. Through the CLI, real server."""

from __future__ import annotations

import json

import asyncpg
import numpy as np
import pytest

from conftest import create_table, write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_segment_smaller_than_a_batch_still_trains_every_row(conn, tmp_path, run_cli):
    """150 rows, batch 64, 2 segments: each segment has fewer rows than one batch; the partial
    batch is padded, so every training row is used and the model learns."""
    await create_table(conn, "public.tiny_src", 150, seed=2)
    grid = write_grid(tmp_path, """
        name: tiny
        data: {table: public.tiny_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
               task: classification}
        segments: 2
        models: [{name: m, layers: [{dense: 16}]}]
        search: {space: {learning_rate: [0.05], batch_size: [64]}}
        epochs: 3
        metric: loss
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    stats = json.loads(await conn.fetchval(
        "SELECT p.stats FROM ctq.packs p JOIN ctq.runs r USING (pack_id) WHERE r.run_id = $1", run_id))
    per_epoch = await conn.fetch("SELECT epoch, sum(rows) AS n FROM ctq.hops WHERE run_id = $1 GROUP BY epoch", run_id)
    assert all(r["n"] == stats["train_rows"] for r in per_epoch) and stats["train_rows"] > 100
    losses = [r["train_loss"] for r in await conn.fetch(
        "SELECT train_loss FROM ctq.epochs WHERE run_id = $1 ORDER BY epoch", run_id)]
    assert losses[-1] < losses[0]


async def test_too_few_rows_for_the_segments_is_refused_before_anything_is_written(conn, tmp_path, run_cli):
    await conn.execute("DROP TABLE IF EXISTS public.three_src; CREATE TABLE public.three_src AS "
                       "SELECT g::float8 AS f1, g % 2 AS label FROM generate_series(1, 3) g")
    grid = write_grid(tmp_path, """
        data: {table: public.three_src, features: [f1], label: label, task: classification,
               validation_fraction: 0}
        segments: 4
        models: [{layers: []}]
        epochs: 1
        metric: loss
    """)
    packs = await conn.fetchval("SELECT count(*) FROM ctq.packs")
    proc = run_cli("train", str(grid))
    assert proc.returncode == 2 and "3 training rows" in proc.stderr and "4 segments" in proc.stderr
    assert await conn.fetchval("SELECT count(*) FROM ctq.packs") == packs


async def test_boolean_labels_are_classes(conn, tmp_path, run_cli):
    """Boolean labels are classes false and true (recorded so); the table is named by a reserved
    word, which ctq's messages and catalog quote as SQL needs (public."where")."""
    await conn.execute('DROP TABLE IF EXISTS public."where"; CREATE TABLE public."where" AS '
                       "SELECT (g % 10)::float8 AS f1, (g % 10 > 4) AS label FROM generate_series(1, 2000) g")
    grid = write_grid(tmp_path, """
        data: {table: 'public."where"', features: [f1], label: label, task: classification}
        segments: 2
        models: [{layers: [{dense: 8}]}]
        search: {space: {learning_rate: [0.05]}}
        epochs: 3
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["best_metric"] > 0.9
    pack = await conn.fetchrow("SELECT p.source_table, p.stats FROM ctq.runs r JOIN ctq.packs p USING (pack_id) "
                               "WHERE r.run_id = $1", result["run_id"])
    assert pack["source_table"] == 'public."where"'
    assert json.loads(pack["stats"])["class_values"] == [False, True]


async def test_a_two_class_precision_recall_or_f1_run_says_which_class_it_measures(conn, tmp_path, run_cli):
    """Which class val_recall is of follows the label column's sort order, which its collation sets
    ('B' < 'a' in C): a user trial optimised the majority class's recall believing it the minority's.
    The run says which, as a note (and in --json's notices)."""
    await conn.execute('DROP TABLE IF EXISTS public.which_class; CREATE TABLE public.which_class AS '
                       "SELECT (g % 10)::float8 AS f1, CASE WHEN g % 10 > 7 THEN 'a' ELSE 'B' END COLLATE \"C\" "
                       "AS label FROM generate_series(1, 1000) g")
    grid = """
        data: {{table: public.which_class, features: [f1], label: label, task: classification,
                validation_fraction: {fraction}}}
        segments: 2
        models: [{{layers: []}}]
        epochs: 1
        metric: {metric}
    """
    proc = run_cli("train", str(write_grid(tmp_path, grid.format(fraction=0.2, metric="val_recall"))), "--json")
    assert proc.returncode == 0, proc.stderr
    note = "metric: val_recall is that of class 'a', the second of the label's values ('B', 'a') in its column's " \
           "sort order"
    assert note in json.loads(proc.stdout)["notices"] and f"note: {note}" in proc.stderr, proc.stderr
    assert "validation row(s) rank the models" not in proc.stderr  # (200 of them)
    # ... and so does its resume (here of a run stopped after its last hop, before its end was recorded)
    run_id = json.loads(proc.stdout)["run_id"]
    await conn.execute("UPDATE ctq.runs SET status = 'interrupted' WHERE run_id = $1", run_id)
    resumed = run_cli("train", "--resume", str(run_id), "--json")
    assert resumed.returncode == 0 and note in json.loads(resumed.stdout)["notices"], resumed.stderr
    few = write_grid(tmp_path, grid.format(fraction=0.005, metric="val_accuracy"), name="few.yaml")
    proc = run_cli("train", str(few), "--json")
    assert proc.returncode == 0, proc.stderr
    (said,) = [n for n in json.loads(proc.stdout)["notices"] if "validation row(s) rank the models" in n]
    assert said.startswith("data.validation_fraction: only ") and int(said.split()[2]) < 30, said


async def test_regression_targets_are_standardised_and_reported_in_their_units(conn, tmp_path, run_cli):
    """Targets in the hundreds of thousands: the models learn (far better than the mean) and the
    losses are in the target's own units."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 4))
    y = 200_000 + 50_000 * (x[:, 0] + 0.5 * x[:, 1]) + rng.normal(scale=5_000, size=4000)
    await conn.execute("DROP TABLE IF EXISTS public.price_src; "
                       "CREATE TABLE public.price_src (a float8, b float8, c float8, d float8, price float8)")
    await conn.copy_records_to_table("price_src", records=[tuple(map(float, r)) + (float(t),) for r, t in zip(x, y)])
    grid = write_grid(tmp_path, """
        data: {table: public.price_src, features: [a, b, c, d], label: price, task: regression}
        segments: 2
        models: [{layers: [{dense: 16}]}]
        search: {space: {optimizer: [adam, sgd], learning_rate: [0.01], batch_size: [32]}}
        epochs: 4
        metric: val_mae
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    mean_mae = float(np.mean(np.abs(y - y.mean())))  # predicting the mean: about 45,000
    assert all(row["val_metric"] < 0.25 * mean_mae for row in result["leaderboard"]), result["leaderboard"]
    assert all(row["val_metric"] > 1000 for row in result["leaderboard"])  # in units of the target


async def test_a_feature_and_a_target_far_from_zero_keep_their_spread(conn, tmp_path, run_cli):
    """A Unix time (about 1.7e9, float32 steps of 128 s there) and a target of about 1e9 in
    hundredths: packed as float32 values, 1,000 distinct times fell on 9 values and the target on
    its 64-unit steps, and a model of an exact linear relation ended at val_mae 0.32 (a user
    trial); packed less their means (subtracted in float8) they keep their spread: training,
    evaluate and predict all see it."""
    rng = np.random.default_rng(11)
    k = rng.integers(0, 1000, 3000)
    await conn.execute("DROP TABLE IF EXISTS public.epoch_src; "
                       "CREATE TABLE public.epoch_src (id int, t bigint, y numeric)")
    await conn.copy_records_to_table("epoch_src", records=[(i, 1_700_000_000 + int(v), 1_000_000_000 + int(v) / 100)
                                                           for i, v in enumerate(k)])
    grid = write_grid(tmp_path, """
        data: {table: public.epoch_src, features: [t], label: y, task: regression}
        segments: 2
        models: [{name: lin, layers: []}]
        search: {space: {optimizer: [adam], learning_rate: [0.05], batch_size: [32]}}
        epochs: 4
        metric: val_mae
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["best_metric"] < 0.05, run["leaderboard"]  # the target spans 10; its float32 steps alone: 0.32
    scored = run_cli("evaluate", str(run["run_id"]), "--table", "public.epoch_src", "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["mae"] < 0.05, scored.stdout
    predicted = run_cli("predict", str(run["run_id"]), "--table", "public.epoch_src", "--id-column", "id",
                        "--out", "public.epoch_pred")
    assert predicted.returncode == 0, predicted.stderr
    assert await conn.fetchval("SELECT max(abs(p.prediction - s.y::float8)) FROM public.epoch_pred p "
                               "JOIN public.epoch_src s USING (id)") < 0.2


async def test_ties_in_the_score_are_broken_by_validation_loss(conn, small_table, tmp_path, run_cli):
    grid = write_grid(tmp_path, f"""
        data: {{table: {small_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
               task: classification}}
        segments: 2
        models: [{{layers: []}}]
        search: {{space: {{learning_rate: [0.001, 0.002, 0.003]}}}}
        epochs: 1
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    # the same score for all three, different validation losses: the lowest loss must rank first
    await conn.execute("UPDATE ctq.models SET val_metric = 0.5, "
                       "val_loss = CASE model_id WHEN 1 THEN 0.7 WHEN 2 THEN 0.9 ELSE 0.5 END WHERE run_id = $1", run_id)
    board = await conn.fetch("SELECT model_id, rank FROM ctq.leaderboard WHERE run_id = $1 ORDER BY rank", run_id)
    assert [r["model_id"] for r in board] == [3, 1, 2] and [r["rank"] for r in board] == [1, 2, 3]


async def test_a_database_statement_timeout_does_not_stop_ctq(dsn, tmp_path, run_cli):
    """ALTER DATABASE ... SET statement_timeout = '1s' (for interactive users): ctq's sessions set
    their own, so warm-up and hops (longer than a second) are not cancelled."""
    admin = await asyncpg.connect(dsn)
    await admin.execute("DROP DATABASE IF EXISTS ctq_timeout")
    await admin.execute("CREATE DATABASE ctq_timeout")
    await admin.execute("ALTER DATABASE ctq_timeout SET statement_timeout = '1s'")
    await admin.close()
    other = dsn.replace("/ctq?", "/ctq_timeout?")
    conn = await asyncpg.connect(other)
    await create_table(conn, "public.t_src", 3000, seed=4)
    await conn.close()
    grid = write_grid(tmp_path, """
        data: {table: public.t_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}
        segments: 2
        models: [{layers: [{dense: 32}]}]
        epochs: 1
    """)
    proc = run_cli("train", str(grid), "--json", env={"CTQ_DSN": other})
    assert proc.returncode == 0, proc.stderr


async def test_text_labels_are_classes_and_recorded_with_the_pack(conn, tmp_path, run_cli):
    """'M'/'B'-style labels (one with a quote and a backslash) train as classes; the class values
    are recorded with the pack, in order."""
    await conn.execute("DROP TABLE IF EXISTS public.text_src; CREATE TABLE public.text_src AS "
                       "SELECT (g % 10)::float8 AS f1, CASE WHEN g % 10 > 6 THEN 'M' WHEN g % 10 > 2 "
                       "THEN E'it''s \\\\ odd' ELSE 'B' END AS diagnosis FROM generate_series(1, 3000) g")
    grid = write_grid(tmp_path, """
        data: {table: public.text_src, features: [f1], label: diagnosis, task: classification}
        segments: 2
        models: [{layers: [{dense: 16}]}]
        search: {space: {learning_rate: [0.05]}}
        epochs: 4
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["best_metric"] > 0.9
    stats = json.loads(await conn.fetchval(
        "SELECT p.stats FROM ctq.packs p JOIN ctq.runs r USING (pack_id) WHERE r.run_id = $1", result["run_id"]))
    assert stats["class_values"] == ["B", "M", "it's \\ odd"] and stats["n_outputs"] == 3
    regression = write_grid(tmp_path, """
        data: {table: public.text_src, features: [f1], label: diagnosis, task: regression}
        models: [{layers: []}]
        epochs: 1
    """, name="r.yaml")
    proc = run_cli("train", str(regression), "-q")
    assert proc.returncode == 2 and "use task: classification" in proc.stderr


async def test_class_weight_needs_classification(small_table, tmp_path, run_cli):
    grid = write_grid(tmp_path, f"""
        data: {{table: {small_table}, features: [f1], label: f2, task: regression, class_weight: balanced}}
        models: [{{layers: []}}]
        epochs: 1
    """)
    proc = run_cli("train", str(grid), "-q")
    assert proc.returncode == 2 and "data.class_weight" in proc.stderr and "classification" in proc.stderr


async def test_a_table_of_1600_columns_trains_evaluates_and_predicts(conn, dsn, tmp_path, run_cli):
    """PostgreSQL's widest table (1,600 columns: 1,598 real features, an id, a label), in parallel
    plans (a server tuned for them: at this size the planner would choose one from about 100,000
    rows): the profile's, the packing's and the scoring checks' statements stay under
    the 1,664-column row limit of a parallel partial aggregate and under the stack depth limit, and
    the model learns from the last columns, the only ones that carry the label."""
    n_features, rows = 1598, 1500
    names = [f"f{i:04d}" for i in range(1, n_features + 1)]
    cols = ", ".join(f"{c} real" for c in names)
    signal = "((g * 7919) % 1000 / 500.0 - 1)"
    # the label shows in every 4th of the last 300 columns only (the last of the statements' batches)
    values = ", ".join(f"({signal} + random())::real" if i >= n_features - 300 and i % 4 == 0 else "random()::real"
                       for i in range(n_features))
    await conn.execute(f"DROP TABLE IF EXISTS public.wide_src; CREATE TABLE public.wide_src (id int, {cols}, label int);"
                       "SELECT setseed(0.5);"
                       f"INSERT INTO public.wide_src SELECT g, {values}, ({signal} > 0)::int "
                       f"FROM generate_series(1, {rows}) g; ANALYZE public.wide_src")
    parallel = {"parallel_setup_cost": "0", "parallel_tuple_cost": "0", "min_parallel_table_scan_size": "0"}
    for name, value in parallel.items():
        await conn.execute(f"SET {name} = {value}")
    wide_aggregate = ", ".join(f"avg({c})" for c in names[:300])
    plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN SELECT {wide_aggregate} FROM public.wide_src"))
    assert "Partial Aggregate" in plan, plan  # the partial aggregate row whose width is limited
    env = {"CTQ_DSN": dsn + "&" + "&".join(f"{k}={v}" for k, v in parallel.items())}
    grid = write_grid(tmp_path, f"""
        data: {{table: public.wide_src, features: [{', '.join(names)}], label: label, task: classification}}
        segments: 2
        models: [{{layers: []}}]
        search: {{space: {{learning_rate: [0.01]}}}}
        epochs: 2
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json", "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert await conn.fetchval("SELECT count(DISTINCT f1598) FROM public.wide_src") == rows  # noise, not constant
    assert out["best_metric"] > 0.8, out
    run_id = str(out["run_id"])
    proc = run_cli("evaluate", run_id, "--table", "public.wide_src", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] > 0.8
    proc = run_cli("predict", run_id, "--table", "public.wide_src", "--id-column", "id", "--out", "public.wide_out",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    assert await conn.fetchval("SELECT count(*) FROM public.wide_out") == rows
    # a NULL in the last feature is found by the scoring checks' last batch and named
    await conn.execute(f"UPDATE public.wide_src SET {names[-1]} = NULL WHERE id = 3")
    proc = run_cli("evaluate", run_id, "--table", "public.wide_src", env=env)
    assert proc.returncode == 2 and f"column '{names[-1]}' has 1 NULL value(s)" in proc.stderr, proc.stderr




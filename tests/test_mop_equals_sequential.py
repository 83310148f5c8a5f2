"""MOP training equals sequential training: hopping the whole state loses nothing.

The state a model ends with after a MOP run (weights + optimizer slots, trained in the database on
segment after segment) must equal a plain Keras run, in this process, that starts from the same
initial weights and fits the same buffers in the same order with the same batches.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import numpy as np
import pytest

from conftest import assert_close, stored_state, write_grid
from ctq.rules import Hyperparameters, PackStats

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRID = """
    name: mop-vs-sequential
    data:
      table: {table}
      features: [f1, f2, f3, f4, f5, f6, f7, f8]
      label: label
      task: classification
      validation_fraction: 0.2
    segments: 2
    models:
      - name: mlp
        layers:
          - {{dense: 12, activation: tanh}}
          - {{dense: 8, activation: relu}}
    search:
      method: grid
      seed: 11
      space:
        optimizer: [adam, sgd]
        learning_rate: [0.01]
        batch_size: [50]
    epochs: 2
    metric: val_loss
"""


def standalone_keras(arch_layers, hyper, seed, segments_in_order, n_classes, class_weights=None):
    """Train in plain Keras, written independently of ctq.indb, and return the trained model."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((8,))]
    layers += [keras.layers.Dense(spec["units"], activation=spec["activation"]) for spec in arch_layers]
    layers.append(keras.layers.Dense(n_classes, activation="softmax"))
    model = keras.Sequential(layers)
    optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[hyper["optimizer"]](
        learning_rate=hyper["learning_rate"])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for x, y in segments_in_order:  # the last partial batch is padded with rows of weight 0
        batch = min(hyper["batch_size"], len(x))  # a batch is at most the segment's rows, as Keras takes it
        pad = (-len(x)) % batch
        real = np.ones(len(x), np.float32) if class_weights is None else np.asarray(class_weights, np.float32)[y]
        weights = np.concatenate([real, np.zeros(pad, np.float32)])
        x = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])
        y = np.concatenate([y, np.zeros(pad, y.dtype)])
        model.fit(x, y, sample_weight=weights, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return model


def model_state(model):
    return [np.asarray(v.numpy()) for v in list(model.variables) + list(model.optimizer.variables)]


async def segment_arrays(conn, table, segment, stats):
    """A segment's training data as the server sees it (the pack's layout is ctq.indb's business)."""
    from ctq.indb import decode_buffers

    rows = await conn.fetch(f"SELECT rows, x, y, k FROM {table} WHERE segment = $1 AND bucket >= 0", segment)
    return decode_buffers([tuple(r) for r in rows], stats, "classification")


async def assert_run_equals_standalone(conn, run_id, compare_validation=False, models=2):
    pack = await conn.fetchrow(
        "SELECT p.table_name, p.stats FROM ctq.runs r JOIN ctq.packs p USING (pack_id) WHERE r.run_id = $1", run_id)
    stats = PackStats.from_dict(json.loads(pack["stats"]))
    n_classes = stats.n_outputs
    data = {s: await segment_arrays(conn, pack["table_name"], s, stats) for s in (0, 1)}
    rows = await conn.fetch("SELECT model_id, architecture, hyperparameters, seed, val_loss, val_metric "
                            "FROM ctq.models WHERE run_id = $1 ORDER BY model_id", run_id)
    assert len(rows) == models
    orders = set()
    for m in rows:
        order = [r["segment"] for r in await conn.fetch(
            "SELECT segment FROM ctq.hops WHERE run_id = $1 AND model_id = $2 ORDER BY started_at",
            run_id, m["model_id"])]
        assert len(order) == 4
        orders.add(tuple(order))
        model = standalone_keras(json.loads(m["architecture"])["layers"], json.loads(m["hyperparameters"]),
                                 m["seed"], [data[s] for s in order], n_classes)
        expected = model_state(model)
        actual = await stored_state(conn, run_id, m["model_id"])
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert a.shape == e.shape
            assert_close(a, e)
        if compare_validation:  # the last epoch's validation loss and accuracy, as the server evaluated them
            xv, yv = await segment_arrays(conn, pack["table_name"], -1, stats)
            assert len(xv) > 0
            loss, accuracy = model.evaluate(xv, yv, batch_size=1024, verbose=0)
            assert_close(np.array([m["val_loss"], m["val_metric"]]), np.array([loss, accuracy]))
    # the check is only meaningful if hopping happened: each model saw both segments every epoch
    assert all(sorted(o[:2]) == [0, 1] and sorted(o[2:]) == [0, 1] for o in orders)


async def test_mop_state_equals_standalone_keras(small_table, tmp_path, run_cli, conn):
    grid = write_grid(tmp_path, GRID.format(table=small_table))
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    await assert_run_equals_standalone(conn, json.loads(proc.stdout)["run_id"], compare_validation=True)


async def test_a_batch_larger_than_a_segment_is_that_segments_rows_as_keras_takes_it(small_table, tmp_path,
                                                                                     run_cli, conn):
    """batch_size 100,000,000 on segments of a few hundred rows: each hop trains one batch of the
    segment's rows, as Keras's fit does, and the run equals plain Keras so (padded to the batch
    size, every step was diluted by rows / batch and the padding took the server's memory: the
    kernel killed the backend and the server restarted, found by a user trial)."""
    grid = write_grid(tmp_path, GRID.format(table=small_table).replace("mop-vs-sequential", "mop-huge-batch")
                      .replace("batch_size: [50]", "batch_size: [100000000]"))
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    await assert_run_equals_standalone(conn, json.loads(proc.stdout)["run_id"], compare_validation=True)


async def test_a_rerun_loads_every_compiled_program_from_the_cache_and_still_equals_keras(
        small_table, tmp_path, run_cli, conn, cluster):
    """The server keeps jax's compiled programs in its data directory (one folder per jax, jaxlib
    and Keras version): the second run of a grid, in new backends, compiles nothing (jax writes an
    entry for every program it had to compile) and trains exactly as plain Keras."""
    grid = write_grid(tmp_path, GRID.format(table=small_table).replace("mop-vs-sequential", "mop-cached")
                      .replace("{dense: 12, activation: tanh}", "{dense: 13, activation: tanh}"))
    first = run_cli("train", str(grid), "--json", "-q")
    assert first.returncode == 0, first.stderr
    parent = cluster.data_dir / "ctq_compile_cache"
    (folder,) = parent.iterdir()
    assert "jax-" in folder.name and "keras-" in folder.name
    written = {p.name for p in folder.iterdir()}
    assert len(written) > 10  # this architecture's train, evaluation and initialisation programs
    (parent / "jax-0.1-jaxlib-0.1-keras-2.0").mkdir()  # an upgrade's leftover: removed
    second = run_cli("train", str(grid), "--json", "-q", "--name", "mop-cached-again")
    assert second.returncode == 0, second.stderr
    assert {p.name for p in folder.iterdir()} == written
    assert list(parent.iterdir()) == [folder]
    await assert_run_equals_standalone(conn, json.loads(second.stdout)["run_id"])
    doctor = {c["name"]: c for c in json.loads(run_cli("doctor", "--json").stdout)}
    assert str(folder) in doctor["compile cache"]["detail"]


async def test_a_state_of_many_parts_hops_whole(small_table, tmp_path, run_cli, conn):
    """A model whose arrays are larger than a part (a 2100 x 2100 kernel is 17.6 MB, a part at most
    16 MiB): its state (53 MB with Adam's moments) is stored in pieces, read back into the
    variables across their boundaries on every hop, and the run still equals plain Keras."""
    from ctq.indb import STATE_PART_BYTES

    grid = write_grid(tmp_path, GRID.format(table=small_table).replace("mop-vs-sequential", "mop-many-parts")
                      .replace("{dense: 12, activation: tanh}", "{dense: 2100, activation: tanh}")
                      .replace("{dense: 8, activation: relu}", "{dense: 2100, activation: relu}")
                      .replace("optimizer: [adam, sgd]", "optimizer: [adam]")
                      .replace("learning_rate: [0.01]", "learning_rate: [0.0001]"))  # one model is enough
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    parts = await conn.fetch("SELECT model_id, array_index, byte_offset, length(data) AS n FROM ctq.model_states "
                             "WHERE run_id = $1 AND array_index >= 0", run_id)
    assert max(p["n"] for p in parts) == STATE_PART_BYTES
    assert any(p["byte_offset"] > 0 for p in parts)  # an array in several parts
    sizes = dict(await conn.fetch("SELECT model_id, sum(length(data)) FROM ctq.model_states WHERE run_id = $1 "
                                  "AND array_index >= 0 GROUP BY model_id", run_id))
    assert max(sizes.values()) > 50e6  # Adam's: weights and two moments
    await assert_run_equals_standalone(conn, run_id, models=1)


async def test_mop_equals_standalone_keras_across_kill_9_and_resume(small_table, tmp_path, run_cli, conn, dsn,
                                                                    ctq_home):
    """Killed mid-run and resumed, the models end exactly where an uninterrupted sequential
    training ends: the resumed session starts each model from the state its last hop stored."""
    from test_reliability import start_train, wait_for_hops

    grid = write_grid(tmp_path, GRID.format(table=small_table).replace("mop-vs-sequential", "mop-killed")
                      .replace("batch_size: [50]", "batch_size: [10]"))  # hops long enough to kill in between
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "mop-killed", 0)
    while not await conn.fetchval("SELECT count(*) >= 2 FROM ctq.hops WHERE run_id = $1", run_id):
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) < 8
    resumed = run_cli("train", "--resume", str(run_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id
    await assert_run_equals_standalone(conn, run_id, compare_validation=True)


async def test_balanced_class_weights_are_exactly_the_standalone_ones(small_table, conn, tmp_path, run_cli):
    """data.class_weight: balanced on a label with about 22 % positives: the MOP state equals plain
    Keras trained with scikit-learn's balanced weights, rows / (classes x class rows)."""
    await conn.execute("DROP TABLE IF EXISTS public.rare_src; CREATE TABLE public.rare_src AS "
                       "SELECT f1, f2, f3, f4, f5, f6, f7, f8, (f1 > 1.2)::int AS label FROM " + small_table)
    grid = write_grid(tmp_path, GRID.format(table="public.rare_src").replace(
        "validation_fraction: 0.2", "validation_fraction: 0.2\n      class_weight: balanced"))
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    table, stats = await conn.fetchrow(
        "SELECT p.table_name, p.stats FROM ctq.runs r JOIN ctq.packs p USING (pack_id) WHERE r.run_id = $1", run_id)
    stats = PackStats.from_dict(json.loads(stats))
    counts = stats.class_counts
    assert len(counts) == 2 and min(counts) < 0.3 * sum(counts)
    weights = [sum(counts) / (2 * c) for c in counts]
    data = {s: await segment_arrays(conn, table, s, stats) for s in (0, 1)}
    for m in await conn.fetch("SELECT model_id, architecture, hyperparameters, seed FROM ctq.models "
                              "WHERE run_id = $1 ORDER BY model_id", run_id):
        order = [r["segment"] for r in await conn.fetch(
            "SELECT segment FROM ctq.hops WHERE run_id = $1 AND model_id = $2 ORDER BY started_at",
            run_id, m["model_id"])]
        expected = model_state(standalone_keras(json.loads(m["architecture"])["layers"],
                                                json.loads(m["hyperparameters"]), m["seed"],
                                                [data[s] for s in order], 2, weights))
        for a, e in zip(await stored_state(conn, run_id, m["model_id"]), expected):
            assert_close(a, e)


@pytest.mark.parametrize("task, metric, classes, class_weights, l2", [
    ("classification", None, 3, None, 0.0),
    ("classification", None, 3, [0.5, 1.0, 3.0], 0.0),
    ("classification", "auc", 2, None, 0.0),
    ("classification", "f1", 3, None, 0.0),
    ("regression", None, 1, None, 0.0),
    ("classification", None, 3, None, 0.5),
    ("regression", None, 1, None, 0.5),
])
async def test_a_passs_loss_and_metric_are_over_its_real_rows(task, metric, classes, class_weights, l2):
    """1,200 rows in batches of 512: the last batch is padded with 336 rows of weight 0. With a
    learning rate of 0 the weights do not move, so the pass's loss and metric must be what Keras's
    evaluate gives on the 1,200 real rows (the loss weighed by the class weights, the metric not),
    a weight penalty (l2) counted once, as Keras counts it (such a model trains unpadded)."""
    from ctq import indb, rules

    keras = indb.import_keras()
    rng = np.random.default_rng(3)
    layer = {"type": "dense", "units": 8, "activation": "relu", "l2": l2}
    model = indb.compile_model(indb.build_model({"layers": [layer]}, (4,), classes, task),
                               Hyperparameters("sgd", 0.0), task, metric, classes)
    x = rng.normal(size=(1200, 4)).astype(np.float32)
    if task == "classification":
        y = rng.integers(0, classes, 1200).astype(np.int32)
    else:
        y = rng.normal(size=1200).astype(np.float32)
    loss, value = indb.fit_pass(model, x, y, 512, keras.callbacks.Callback(), task,
                                PackStats(input_dim=4, n_outputs=classes, mean=[0] * 4, std=[1] * 4, target_std=1.0),
                                class_weights, metric, penalised=bool(model.losses))
    weights = None if class_weights is None else np.asarray(class_weights, np.float32)[y]
    expected_loss = model.evaluate(x, y, sample_weight=weights, batch_size=1200, verbose=0, return_dict=True)["loss"]
    expected = model.evaluate(x, y, batch_size=1200, verbose=0, return_dict=True)[rules.compiled_metric(task, metric)]
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert value == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("task,metric,classes,rows,l2", [
    ("classification", None, 3, 2034, 0.0),
    ("classification", None, 3, 300, 0.0),
    ("classification", "auc", 2, 1024, 0.0),
    ("regression", None, 1, 2500, 0.0),
    ("classification", None, 3, 2034, 0.01),
    ("regression", None, 1, 2500, 0.01),
])
async def test_a_validation_pass_is_keras_evaluate_over_the_real_rows(task, metric, classes, rows, l2):
    """The validation rows are evaluated through one program (batches of 1,024, the last padded
    with rows of weight 0): the loss and metric must be what Keras's evaluate gives on the real
    rows alone, whatever their number; a model with a weight penalty (l2) too (unpadded), its loss
    the data's alone, computed here from its predictions (Keras's evaluate adds the penalty)."""
    from ctq import indb, rules

    keras = indb.import_keras()
    rng = np.random.default_rng(5)
    layer = {"type": "dense", "units": 8, "activation": "relu", "l2": l2}
    cm = indb.CompiledModel({"layers": [layer]}, Hyperparameters("adam", 0.01), (4,), classes, task, metric)
    assert cm.penalised == (l2 > 0)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = rng.integers(0, classes, rows).astype(np.int32) if task == "classification" else \
        rng.normal(size=rows).astype(np.float32)
    loss, result = indb.validation_pass(cm, x, y, keras.callbacks.Callback())
    expected = cm.model.evaluate(x, y, batch_size=rows, verbose=0, return_dict=True)
    predicted = cm.model.predict(x, batch_size=rows, verbose=0)
    data_loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, predicted))) \
        if task == "classification" else float(np.mean((predicted[:, 0] - y) ** 2))
    assert loss == pytest.approx(data_loss, rel=1e-5)
    if l2:
        assert expected["loss"] > data_loss * 1.01  # (Keras's own counts the penalty)
    name = rules.compiled_metric(task, metric)
    assert float(result[name]) == pytest.approx(expected[name], rel=1e-5)


class _NoCancel:
    """The cancel check's SPI call (indb.cancel_callback), which has no server to reach here."""

    @staticmethod
    def execute(query):
        return []


@pytest.mark.parametrize("task,classes,rows,validation,l2,class_weights", [
    ("classification", 3, 2034, 2500, 0.0, None),
    ("classification", 3, 300, 700, 0.0, None),
    ("regression", 1, 1000, 1030, 0.0, None),
    ("classification", 3, 2034, 2500, 0.01, None),
    ("classification", 3, 2034, 2500, 0.01, [1.0, 2.0, 0.5]),
])
async def test_after_the_warmup_a_first_hop_compiles_nothing(task, classes, rows, validation, l2, class_weights):
    """The warm-up (indb.compile_steps) exists so that hops carry per-hop costs only: a model's
    first hop on the segment (its initial weights drawn, a training pass, the epoch's validation
    pass over every validation row) must find every program compiled, whatever the row counts
    (the warm-up evaluates one validation batch, not all of them)."""
    import jax

    from ctq import indb

    rng = np.random.default_rng(7)
    layer = {"type": "dense", "units": 16, "activation": "relu", "l2": l2}
    hyper = Hyperparameters("adam", 0.01, 64)
    stats = PackStats(input_dim=4, n_outputs=classes, mean=[0] * 4, std=[1] * 4, target_std=1.0)

    def data(n):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = rng.integers(0, classes, n).astype(np.int32) if task == "classification" else \
            rng.normal(size=n).astype(np.float32)
        return x, y

    (x, y), (xv, yv) = data(rows), data(validation)
    cm = indb.CompiledModel({"layers": [layer]}, hyper, (4,), classes, task)
    indb.compile_steps(cm, hyper, rows, xv, yv, _NoCancel, class_weights)
    compiles = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        cm.initialise(3, hyper)
        callback = indb.cancel_callback(_NoCancel)
        indb.fit_pass(cm.model, x, y, hyper.batch_size, callback, task, stats, class_weights,
                      penalised=cm.penalised)
        indb.validation_pass(cm, xv, yv, callback)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert not compiles, f"{len(compiles)} programs compiled in the first hop"

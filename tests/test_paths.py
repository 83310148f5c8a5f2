"""Configuration paths trained end to end, not only parsed: every layer kind (dropout, batch_norm,
l2), a keras_json model (the grid.yaml examples' custom.json), the optimizers beyond adam/sgd and
momentum; regression that learns, on an array feature column, with no validation split, ranked
by a "min" metric."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import REPO, write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_every_layer_kind_keras_json_and_optimizer_train(small_table, tmp_path, run_cli, conn):
    (tmp_path / "models").mkdir()
    shutil.copy(REPO / "examples" / "models" / "custom.json", tmp_path / "models" / "custom.json")
    grid = write_grid(tmp_path, """
        name: paths
        data: {table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}
        segments: 2
        models:
          - name: kinds
            layers: [{dense: 32, activation: relu, l2: 0.001}, {dropout: 0.2}, {batch_norm: true}, {dense: 16}]
          - name: custom
            keras_json: models/custom.json
        search:
          space:
            optimizer: [rmsprop, adamw, adagrad, nadam, sgd]
            learning_rate: [0.02]
            batch_size: [32]
            momentum: [0.9]
        epochs: 1
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    models = await conn.fetch("SELECT name, architecture, hyperparameters, status, epochs_done, val_metric, "
                              "EXISTS (SELECT 1 FROM ctq.model_states s WHERE s.run_id = m.run_id AND s.model_id = m.model_id) "
                              "AS has_state FROM ctq.models m WHERE run_id = $1", result["run_id"])
    assert len(models) == 10
    seen = set()
    for m in models:
        hyper, arch = json.loads(m["hyperparameters"]), json.loads(m["architecture"])
        seen.add(("keras_json" in arch, hyper["optimizer"]))
        assert (hyper.get("momentum") == 0.9) == (hyper["optimizer"] in ("sgd", "rmsprop")), m["name"]
        assert m["status"] == "succeeded" and m["epochs_done"] == 1 and m["has_state"], m["name"]
        assert m["val_metric"] > 0.5, (m["name"], m["val_metric"])  # 3 classes: they learned something
    assert len(seen) == 10
    kinds = json.loads(next(m for m in models if "keras_json" not in json.loads(m["architecture"]))["architecture"])
    assert [layer["type"] for layer in kinds["layers"]] == ["dense", "dropout", "batch_norm", "dense"]


async def test_regression_on_an_array_column_learns_without_validation_ranked_by_min_loss(conn, tmp_path, run_cli):
    await conn.execute("DROP TABLE IF EXISTS public.reg_array")
    await conn.execute("""
        CREATE TABLE public.reg_array AS
        SELECT ARRAY[a, b, c]::float8[] AS x, 3 * a - 2 * b + 0.5 * c + 10 AS y
        FROM (SELECT random() * 4 AS a, random() * 4 AS b, random() * 4 AS c FROM generate_series(1, 3000)) s
    """)
    grid = write_grid(tmp_path, """
        name: reg-array
        data: {table: public.reg_array, features: [x], label: y, task: regression, validation_fraction: 0}
        segments: 2
        models: [{name: lin, layers: [{dense: 16, activation: relu}]}]
        search: {space: {learning_rate: [0.01, 0.00001], batch_size: [32]}}
        epochs: 3
        metric: loss
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    run_id = result["run_id"]
    stats = json.loads(await conn.fetchval("SELECT p.stats FROM ctq.runs r JOIN ctq.packs p USING (pack_id) "
                                           "WHERE r.run_id = $1", run_id))
    assert stats["validation_rows"] == 0 and stats["train_rows"] == 3000 and stats["input_dim"] == 3
    epochs = await conn.fetch("SELECT model_id, epoch, train_loss, train_metric, val_loss FROM ctq.epochs "
                              "WHERE run_id = $1 ORDER BY model_id, epoch", run_id)
    assert all(e["val_loss"] is None for e in epochs)
    fast = [e for e in epochs if e["model_id"] == 1]
    assert fast[-1]["train_loss"] < 0.2 * fast[0]["train_loss"]  # it learns
    y_std = float(await conn.fetchval("SELECT stddev_pop(y) FROM public.reg_array"))
    assert fast[-1]["train_metric"] < 0.25 * y_std  # mean absolute error, in the label's units
    board = result["leaderboard"]  # "loss" is ranked lowest first
    assert [r["model_id"] for r in board] == [1, 2]
    assert board[0]["score"] < board[1]["score"]
    assert result["best_model_id"] == 1 and result["best_metric"] == pytest.approx(min(
        e["train_loss"] for e in epochs if e["epoch"] == 2))
    assert np.isfinite(board[1]["score"])

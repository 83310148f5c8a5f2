"""keras_json models are deserialized by the client (Keras 3, safe mode) before any database work:
a file the server could not build is refused up front, naming the file and the model, instead of
aborting the whole run at warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GOOD = json.loads((REPO / "examples" / "models" / "custom.json").read_text())

# What Keras 2 wrote: no "module" keys, batch_input_shape; Keras 3 cannot locate 'Sequential'.
KERAS2 = {"class_name": "Sequential", "keras_version": "2.4.0",
          "config": {"name": "s", "layers": [{"class_name": "Dense",
                                              "config": {"units": 2, "batch_input_shape": [None, 8]}}]}}
CUSTOM = json.loads(json.dumps(GOOD))
CUSTOM["config"]["layers"][1] = {"module": "mypkg.layers", "class_name": "MyLayer", "config": {"units": 2},
                                 "registered_name": "Custom>MyLayer"}
BAD_VALUE = json.loads(json.dumps(GOOD))
BAD_VALUE["config"]["layers"][1]["config"]["units"] = "x"

GRID = """\
data: {table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}
models:
  - {layers: [{dense: 4}]}
  - keras_json: models/good.json
  - keras_json: models/%s
epochs: 1
"""


async def count_runs(conn) -> int:
    if await conn.fetchval("SELECT to_regclass('ctq.runs')") is None:
        return -1
    return await conn.fetchval("SELECT count(*) FROM ctq.runs")


@pytest.mark.parametrize("doc, expected", [
    (KERAS2, ["Could not locate class 'Sequential'", "Keras 2.4.0"]),
    (CUSTOM, ["Could not locate class 'MyLayer'", "custom or unregistered"]),
    (BAD_VALUE, ["units"]),
], ids=["keras2", "unregistered-custom-class", "invalid-value"])
async def test_a_model_keras_cannot_load_is_refused_before_the_run(doc, expected, tmp_path, run_cli, conn):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "good.json").write_text(json.dumps(GOOD))
    (tmp_path / "models" / "old.json").write_text(json.dumps(doc))
    (tmp_path / "grid.yaml").write_text(GRID % "old.json")
    before = await count_runs(conn)
    # COLUMNS: rich hard-wraps stderr at the terminal width; the message itself is one line.
    proc = run_cli("train", str(tmp_path / "grid.yaml"), env={"COLUMNS": "1000"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "grid.yaml:models[2].keras_json: Keras cannot load models/old.json: " in lines[0]
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in proc.stderr
    assert await count_runs(conn) == before


def test_keras_is_imported_only_for_configs_with_keras_json(tmp_path):
    (tmp_path / "grid.yaml").write_text("data: {table: t, features: [a], label: y, task: regression}\n"
                                        "models: [{layers: [{dense: 4}]}]\nepochs: 1\n")
    code = ("import sys; from ctq.config import load_config; "
            f"load_config({str(tmp_path / 'grid.yaml')!r}); print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_functional_model_trains_predicts_and_exports(small_table, tmp_path, run_cli, conn):
    """A Functional model (two branches joined), as Model.to_json() writes it: Keras empties the
    config of a Functional model it deserializes, and the client's checks and every build on the
    server (the warm-up's, each model's initial weights) deserialize the same architecture (a
    user trial: the second build failed, a traceback before any run)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    inputs = keras.Input((8,))
    wide = keras.layers.Dense(6, activation="relu")(inputs)
    deep = keras.layers.Dense(4, activation="relu")(keras.layers.Dense(8, activation="relu")(inputs))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([wide, deep]))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "branches.json").write_text(keras.Model(inputs, outputs).to_json())
    (tmp_path / "grid.yaml").write_text(
        "name: functional\ndata: {table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, "
        "task: classification}\nmodels:\n  - {name: branches, keras_json: models/branches.json}\n"
        "search: {space: {learning_rate: [0.01, 0.003]}}\nepochs: 2\nsegments: 2\n")
    proc = run_cli("train", str(tmp_path / "grid.yaml"), "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["status"] == "succeeded" and run["best_metric"] > 0.5, run
    exported = run_cli("export", str(run["run_id"]), str(tmp_path / "best.keras"), "--json")
    assert exported.returncode == 0, exported.stderr
    assert type(keras.saving.load_model(tmp_path / "best.keras")).__name__ == "Functional"

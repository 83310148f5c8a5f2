"""keras_json models that do not fit the data are refused before anything is written (issue 9:
the silent wrong results). Through the CLI against the real server."""

from __future__ import annotations

import json

import pytest

from conftest import write_grid
from test_bad_input import count_runs

pytestmark = pytest.mark.asyncio(loop_scope="session")


def sequential(inputs: int, *layers: tuple[int, str]) -> dict:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None, "config": {"name": "s", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, inputs]}},
        *({"module": "keras.layers", "class_name": "Dense", "config": {"units": u, "activation": a}}
          for u, a in layers)]}}


@pytest.mark.parametrize("task, model, reason", [
    ("classification", sequential(8, (16, "relu"), (1, "sigmoid")), "1 unit(s), the label has 3 classes"),
    ("classification", sequential(8, (16, "relu"), (2, "softmax")), "2 unit(s), the label has 3 classes"),
    ("classification", sequential(8, (3, "linear")), "activation is linear, not softmax"),
    ("classification", sequential(5, (3, "softmax")), "input shape is (5,), the data has 8 features"),
    ("regression", sequential(8, (8, "relu"), (1, "sigmoid")), "output activation is sigmoid"),
    ("regression", sequential(8, (2, "linear")), "2 unit(s); a regression model ends in Dense(1)"),
])
async def test_a_model_that_does_not_fit_is_refused(small_table, conn, tmp_path, run_cli, task, model, reason):
    (tmp_path / "m.json").write_text(json.dumps(model))
    grid = write_grid(tmp_path, f"""
        data: {{table: {small_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: {task}}}
        segments: 2
        models: [{{name: mine, keras_json: m.json}}]
        epochs: 1
    """)
    before = await count_runs(conn)
    proc = run_cli("train", str(grid), "-q")
    assert proc.returncode == 2, proc.stderr
    assert "'mine' (keras_json) does not fit the data" in proc.stderr and reason in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert await count_runs(conn) == before


async def test_a_model_that_fits_trains(small_table, tmp_path, run_cli):
    (tmp_path / "m.json").write_text(json.dumps(sequential(8, (16, "relu"), (3, "softmax"))))
    grid = write_grid(tmp_path, f"""
        data: {{table: {small_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
               task: classification}}
        segments: 2
        models: [{{name: mine, keras_json: m.json}}]
        epochs: 1
    """)
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr

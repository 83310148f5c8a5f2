"""A model whose training would not fit a segment's memory is refused before the warm-up builds
anything (issue 18): exit 2, one line naming the model and the sizes, no run left behind. Sizes
are counted from shapes in the segment's backend, so even a model far larger than the machine is
refused in seconds without allocating it. Through the CLI against the real server."""

from __future__ import annotations

import json
import re

import pytest

from conftest import write_grid
from ctq.errors import TooLarge
from ctq.memory import Budget, check_fits, training_bytes
from ctq.rules import Hyperparameters
from test_bad_input import count_runs

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRID = """
    data: {{table: {table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
    segments: 2
    {budget}
    models:
      - {{name: small, layers: [{{dense: 8}}]}}
      - {{name: wide, layers: [{{dense: {units}}}, {{dense: {units}}}]}}
    search: {{space: {{optimizer: [{optimizer}], learning_rate: [0.01, 0.001]}}}}
    epochs: 1
"""


async def test_a_model_over_the_budget_is_refused_naming_it_and_the_sizes(small_table, conn, tmp_path, run_cli):
    """2 x dense 2048 with Adam: 4.2M parameters, 3 values each (weights and Adam's two moments),
    50 MiB of state, about 126 MiB at peak: over memory_budget_mb 100."""
    grid = write_grid(tmp_path, GRID.format(table=small_table, budget="memory_budget_mb: 100", units=2048,
                                            optimizer="adam"))
    before = await count_runs(conn)
    proc = run_cli("train", str(grid), "-q")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    parameters = 8 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 3 + 3
    assert re.search(r"model \d+ \(wide/adam/lr=0\.0\d+/bs=64\) and 1 more of the same architecture does not fit "
                     r"segment \d's memory", lines[0]), lines[0]
    assert f"{parameters:,} parameters, adam keeps 2 value(s) per weight" in lines[0], lines[0]
    assert "the segment has 100 MiB (memory_budget_mb 100)" in lines[0], lines[0]
    assert await count_runs(conn) == max(before, 0)  # no run left (ctq itself may have been installed)


async def test_a_model_larger_than_the_server_is_refused_in_seconds_without_a_budget(small_table, conn, tmp_path,
                                                                                      run_cli):
    """2 x dense 150000: 22.5G parameters, 90 GB of weights alone. No memory_budget_mb: the
    server's own memory over the run's segments is the budget. Counted from shapes, never built."""
    grid = write_grid(tmp_path, GRID.format(table=small_table, budget="", units=150000, optimizer="sgd"))
    before = await count_runs(conn)
    proc = run_cli("train", str(grid), "-q", "--json")
    assert proc.returncode == 2, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert "sgd keeps 0 value(s) per weight" in error and "the server has" in error, error
    assert re.search(r" in all; use a smaller model; run \d+ is removed, nothing trained$", error), error
    assert await count_runs(conn) == max(before, 0)


async def test_a_keras_json_model_larger_than_the_server_is_refused_by_the_memory_check(small_table, conn,
                                                                                         tmp_path, run_cli):
    """The client reads keras_json models to check that they fit the data (model_check): from
    shapes too, so that a model too large to build anywhere reaches the memory check."""
    from test_model_fit import sequential

    (tmp_path / "huge.json").write_text(json.dumps(sequential(8, (150000, "relu"), (150000, "relu"), (3, "softmax"))))
    grid = write_grid(tmp_path, f"""
        data: {{table: {small_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
        segments: 2
        models: [{{name: huge, keras_json: huge.json}}]
        epochs: 1
    """)
    before = await count_runs(conn)
    proc = run_cli("train", str(grid), "-q")
    assert proc.returncode == 2, proc.stderr
    assert "(huge/adam/lr=0.001/bs=64) does not fit segment" in proc.stderr and "22,501," in proc.stderr, proc.stderr
    assert await count_runs(conn) == max(before, 0)


async def test_a_model_within_the_budget_trains(small_table, tmp_path, run_cli):
    grid = write_grid(tmp_path, GRID.format(table=small_table, budget="memory_budget_mb: 400", units=256,
                                            optimizer="adam"))
    proc = run_cli("train", str(grid), "-q", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "succeeded"


async def test_the_segment_data_counts_against_the_budget():
    size = {"parameters": 1000, "trainable": 1000, "slots": 2, "state_bytes": 12000}
    budget = Budget.of(1, None, 2)  # 1 MiB
    check_fits([[(1, "m", "adam")]], [size], budget, data_bytes=(1 << 20) - training_bytes(12000))
    with pytest.raises(TooLarge, match=r"\+ 1 MiB of the segment's cached data"):
        check_fits([[(1, "m", "adam")]], [size], budget, data_bytes=1 << 20)
    check_fits([[(1, "m", "adam")]], [None], budget, data_bytes=1 << 20)  # not countable: the warm-up says why
    assert Budget.of(None, 8 << 30, 4).bytes == 2 << 30 and Budget.of(None, None, 4) is None


def test_a_budget_above_the_server_s_memory_lets_no_larger_model_past_and_no_fix_says_it_would():
    """The refusal's fixes are those that can work: a model needing more than the whole server was
    told "or a larger memory_budget_mb", and a budget set that high let it past (a user trial: 105
    GiB needed on a 24 GiB server)."""
    size = {"parameters": 10**9, "trainable": 10**9, "slots": 2, "state_bytes": 12 << 30}  # needs ~31 GiB
    model = [[(2, "d60000/adam", "adam")]]
    for budget in (Budget.of(None, 24 << 30, 2), Budget.of(120_000, 24 << 30, 2)):
        with pytest.raises(TooLarge) as refused:
            check_fits(model, [size], budget)
        assert "the server has 24.00 GiB in all" in str(refused.value), str(refused.value)
        assert str(refused.value).endswith("; use a smaller model"), str(refused.value)
    assert "(memory_budget_mb 120000 is more than it has)" in str(refused.value)
    smaller = {**size, "state_bytes": 6 << 30}  # ~16 GiB: within the server, over a segment's share
    with pytest.raises(TooLarge, match=r"a larger memory_budget_mb \(up to the server's 24.00 GiB\)$"):
        check_fits(model, [smaller], Budget.of(None, 24 << 30, 2))
    check_fits(model, [smaller], Budget.of(20_000, 24 << 30, 2))  # the budget the user set, within the server


async def test_counting_a_state_leaves_nothing_for_keras_to_draw_later():
    """The memory check counts a model's state in a StatelessScope that defers its variables'
    initialisation; Keras keeps such variables to draw them at the next scope that initialises
    (the warm-up's first training step). Left there, a 170M-parameter model was drawn in full
    during the warm-up: 1.9 GiB more at the segment backend's peak (4.7 vs 2.9 GiB, measured)."""
    from ctq import indb

    indb.import_keras()  # as the server does: the jax backend
    from keras.src.backend.common import global_state

    size = indb.state_size({"layers": [{"type": "dense", "units": 512}, {"type": "dense", "units": 512}]},
                           Hyperparameters("adam"), (8,), 3, "classification")
    assert size["parameters"] == 8 * 512 + 512 + 512 * 512 + 512 + 512 * 3 + 3
    assert not global_state.get_global_attribute("uninitialized_variables")

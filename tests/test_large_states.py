"""Models of any size (issue 18): a training state over 1 GB, the size the paper's ImageNet models
have, trains, hops, survives kill -9 of the coordinator and equals plain Keras; it is scored in
the database. Opt-in (about 4 minutes and 10 GB of memory on 2 cores): set CTQ_TEST_LARGE_STATES=1.
The same runs on Greenplum: tests/test_greenplum.py::test_a_state_over_1_gb_on_greenplum.

The model is wide but cheap to compute: 8 inputs, dense 20000 then dense 5000 (100M parameters,
400 MB of weights, 1.2 GB of state with Adam's two moments), on a few hundred rows.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest import create_table, write_grid
from test_mop_equals_sequential import GRID, assert_run_equals_standalone
from test_reliability import start_train, wait_for_hops

LARGE = bool(os.environ.get("CTQ_TEST_LARGE_STATES"))
pytestmark = [
    pytest.mark.skipif(not LARGE, reason="set CTQ_TEST_LARGE_STATES=1 to train models whose state is over 1 GB "
                                         "(about 4 minutes and 10 GB of memory)"),
    pytest.mark.asyncio(loop_scope="session"),
]


def large_grid(table: str, name: str) -> str:
    """Two models (two learning rates) of 100M parameters each, 2 epochs on 2 segments."""
    return (GRID.format(table=table).replace("mop-vs-sequential", name)
            .replace("{dense: 12, activation: tanh}", "{dense: 20000, activation: tanh}")
            .replace("{dense: 8, activation: relu}", "{dense: 5000, activation: relu}")
            .replace("optimizer: [adam, sgd]", "optimizer: [adam]")
            .replace("learning_rate: [0.01]", "learning_rate: [0.0001, 0.00003]")
            .replace("batch_size: [50]", "batch_size: [128]"))


async def test_a_state_over_1_gb_trains_resumes_after_kill_9_and_equals_keras(tmp_path, dsn, ctq_home, conn,
                                                                            run_cli):
    from ctq.indb import STATE_PART_BYTES

    await create_table(conn, "public.large_src", 800, seed=21)
    grid = write_grid(tmp_path, large_grid("public.large_src", "large-state"))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "large-state", 1, timeout=600)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) < 8
    resumed = run_cli("train", "--resume", str(run_id), "--json", "-q", timeout=1200)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    sizes = await conn.fetch("SELECT model_id, sum(length(data))::int8 AS bytes, max(length(data)) AS part, "
                             "count(*) AS parts FROM ctq.model_states WHERE run_id = $1 GROUP BY model_id", run_id)
    assert len(sizes) == 2
    for s in sizes:  # every state over 1 GB, stored in parts of at most 16 MiB, never one value
        assert s["bytes"] > 2**30 and s["part"] == STATE_PART_BYTES and s["parts"] > 64, dict(s)
    await assert_run_equals_standalone(conn, run_id)
    scored = run_cli("evaluate", str(run_id), "--table", "public.large_src", "--json", timeout=600)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["rows"] == 800

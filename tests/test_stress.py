"""Thousands of short hops: the control connection is never used twice at once (issue 8).

The false "run N is being driven by another ctq process" came from the heartbeat and a model-status
write colliding on the control connection: the collision looked like a dropped connection, the
reconnect let go of the run's lock and two reconnects raced for it. A heartbeat every few
milliseconds makes such a collision near certain on every run if the writes are not serialised.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from conftest import create_table, write_grid
from ctq import api, catalog
from ctq.coordinator import Coordinator
from ctq.search.grid import Grid
from ctq.engines import engine_named
from ctq.scheduler import MopScheduler

pytestmark = pytest.mark.asyncio(loop_scope="session")

LEARNING_RATES = [round(0.001 * (1 + i / 50), 6) for i in range(150)]


async def test_many_short_hops_with_a_busy_heartbeat(dsn, tmp_path):
    conn = await asyncpg.connect(dsn)
    await create_table(conn, "public.stress_src", 400, seed=4)
    grid = write_grid(tmp_path, f"""
        name: stress
        data: {{table: public.stress_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
               task: classification, validation_fraction: 0}}
        segments: 2
        models: [{{name: linear, layers: []}}]
        search:
          space: {{learning_rate: {LEARNING_RATES}, batch_size: [16, 32]}}
        epochs: 1
        metric: loss
    """)
    holders: set[int] = set()
    watching = asyncio.create_task(watch_run_lock(dsn, "stress", holders))
    try:
        result = await api.train(str(grid), dsn, heartbeat_seconds=0.002)
    finally:
        watching.cancel()
    # one coordinator session held the run's lock from start to end: it was never let go
    assert len(holders) == 1, f"the run's lock changed hands: backends {sorted(holders)}"
    models = len(LEARNING_RATES) * 2
    assert result.status == "succeeded", result.failed_models
    assert result.hops == models * 2
    row = await conn.fetchrow(
        "SELECT r.status, count(*) FILTER (WHERE m.status = 'succeeded') AS done, count(*) AS n "
        "FROM ctq.runs r JOIN ctq.models m USING (run_id) WHERE r.run_id = $1 GROUP BY r.status",
        result.run_id)
    assert (row["status"], row["done"], row["n"]) == ("succeeded", models, models)
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", result.run_id) == models * 2
    await conn.close()


async def watch_run_lock(dsn, run_name, holders: set[int]) -> None:
    """Record every backend that holds the run's coordinator lock while the run goes on."""
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            pids = await conn.fetch(
                "SELECT l.pid FROM pg_locks l JOIN ctq.runs r ON l.objid = r.run_id::oid "
                "WHERE r.name = $1 AND r.status = 'running' AND l.locktype = 'advisory' "
                "AND l.classid = $2::oid AND l.granted", run_name, catalog.RUN_LOCK_CLASS)
            holders.update(r["pid"] for r in pids)
            await asyncio.sleep(0.005)
    except asyncpg.exceptions.UndefinedTableError:
        await asyncio.sleep(0.05)
        return await watch_run_lock(dsn, run_name, holders)
    finally:
        await conn.close()


async def test_concurrent_catalog_writes_keep_the_lock(dsn, small_table, tmp_path):
    """Many catalog writes at once on one coordinator: all succeed on the first connection."""
    grid = write_grid(tmp_path, f"""
        data: {{table: {small_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
               task: classification}}
        segments: 2
        models: [{{layers: []}}]
        epochs: 1
    """)
    conn = await asyncpg.connect(dsn)
    first = await api.train(str(grid), dsn)
    plan = await api.load_plan(conn, first.run_id)
    coordinator = Coordinator(dsn, plan, MopScheduler([1], 2, 1, 0), Grid(), engine_named(plan.engine))
    try:
        await coordinator._catalog(catalog.heartbeat, first.run_id)
        pid = coordinator.control.get_server_pid()
        await asyncio.gather(*(coordinator._catalog(catalog.heartbeat, first.run_id) for _ in range(200)))
        assert coordinator.control.get_server_pid() == pid
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::oid AND objid = $2::oid "
            "AND pid = $3 AND granted", catalog.RUN_LOCK_CLASS, first.run_id, pid) == 1
    finally:
        await coordinator.finish("succeeded")
        await conn.close()

"""Nothing is lost: kill -9 and resume, a terminated backend, Ctrl-C, concurrent runs, a failing model.

Real processes against the real server: `ctq train` runs as a subprocess and is killed or
interrupted from here, backends are terminated with pg_terminate_backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ONE_MODEL_ON_SMALL, create_table, ctq_cli, stored_state, write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRID = """
    name: {name}
    data:
      table: {table}
      features: [f1, f2, f3, f4, f5, f6, f7, f8]
      label: label
      task: classification
    segments: 2
    models:
      - name: a
        layers: [{{dense: 64, activation: relu}}, {{dense: 64, activation: relu}}]
      - name: b
        layers: [{{dense: 16, activation: tanh}}]
    search:
      method: grid
      seed: 5
      space:
        learning_rate: [0.001, 0.01]
        batch_size: [16]
    epochs: {epochs}
    metric: val_accuracy
"""


@pytest.fixture(scope="module")
async def long_table(dsn):
    import asyncpg

    conn = await asyncpg.connect(dsn)
    await create_table(conn, "public.long_src", 8000, seed=9)
    await conn.close()
    return "public.long_src"


def start_train(dsn, ctq_home, *args):
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home))
    return subprocess.Popen([sys.executable, "-m", "ctq.cli", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


async def test_a_new_run_is_held_from_the_moment_it_exists(long_table, tmp_path, dsn, ctq_home, conn, run_cli):
    """The run's lock is taken in the transaction that creates it and handed to its coordinator:
    the seconds before the first hop (preload, warm-up) left it unheld, 'stale' to ctq runs, and a
    user trial's `ctq rm` deleted it then (its coordinator went on, failing 'permission denied')."""
    from ctq.catalog import RUN_LOCK_CLASS

    grid = write_grid(tmp_path, GRID.format(name="held-at-once", table=long_table, epochs=1))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    try:
        run_id, deadline = None, time.monotonic() + 120
        while run_id is None and time.monotonic() < deadline and proc.poll() is None:
            if await conn.fetchval("SELECT to_regclass('ctq.runs') IS NOT NULL"):
                run_id = await running_run(conn, "held-at-once")
            await asyncio.sleep(0.01)
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                   "AND classid = $1 AND objid = $2 AND objsubid = 2", RUN_LOCK_CLASS, run_id)
        assert run_id is not None and held == 1  # as soon as the row is visible
        assert not await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
        refused = run_cli("rm", str(run_id), "--yes")  # within a second of its creation, before its first hop
        assert refused.returncode == 2 and "being driven by a live ctq process" in refused.stderr, refused.stderr
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["run_id"] == run_id
    await assert_complete(conn, run_id, models=4, epochs=1)


async def test_a_signal_right_after_the_run_is_created_names_it_and_leaves_it_resumable(long_table, tmp_path, dsn,
                                                                                          ctq_home, conn, run_cli):
    """SIGTERM while the segments' sessions still open (before the coordinator starts): --json said
    run_id null and the run was left stale (a user trial). Now the run is recorded interrupted, the
    JSON names it, and a resume trains it to its end."""
    grid = write_grid(tmp_path, GRID.format(name="early-signal", table=long_table, epochs=1))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id, deadline = None, time.monotonic() + 120
    while run_id is None and time.monotonic() < deadline and proc.poll() is None:
        if await conn.fetchval("SELECT to_regclass('ctq.runs') IS NOT NULL"):
            run_id = await running_run(conn, "early-signal")
        await asyncio.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    status = await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id)
    if doc["run_id"] is None:  # stopped before the run was complete in the catalog: removed, no trace
        assert status is None, (doc, status, err)
        return
    assert doc["status"] == "interrupted" and doc["run_id"] == run_id, doc
    assert status == "interrupted", status  # not 'running' without a coordinator (stale)
    resumed = run_cli("train", "--resume", str(run_id), "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    await assert_complete(conn, run_id, models=4, epochs=1)


async def running_run(conn, name):
    """The running run ``name``: a finished run of that name (another test's) is never the one a
    test started (a signal sent on its hops would hit the new process while it starts)."""
    return await conn.fetchval("SELECT max(run_id) FROM ctq.runs WHERE name = $1 AND status = 'running'", name)


async def wait_for_hops(conn, name, at_least, timeout=180):
    """The running run ``name`` (:func:`running_run`) once it has ``at_least`` hops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await conn.fetchval("SELECT to_regclass('ctq.runs') IS NOT NULL"):
            run_id = await running_run(conn, name)
            if run_id is not None:
                n = await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
                if n >= at_least:
                    return run_id
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {name} did not reach {at_least} hops in {timeout}s")


async def assert_consistent(conn, run_id, segments=2):
    """:func:`check_consistent` in one snapshot: a live run commits hops between its reads (a
    clean clone's suite once read a model's row before a hop and its hops after it)."""
    if conn.is_in_transaction():
        return await check_consistent(conn, run_id, segments)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await check_consistent(conn, run_id, segments)


async def check_consistent(conn, run_id, segments=2):
    """What the primary keys cannot guarantee: for every model, ctq.models (state, epochs_done),
    ctq.hops and ctq.epochs tell the same story. The hops of a model never overlap in time (each
    starts from the state the previous one stored), run epoch after epoch, visit each segment once
    per epoch; an epoch row exists exactly for every complete epoch and closes with its last hop;
    the current state is the last hop's (record_hop stamps both with the hop's end) and has trained
    exactly the model's recorded hops (ctq.current_state_parts: its working state or its checkpoint,
    whole: a header and every array); a checkpoint older than it was taken at the end of an epoch."""
    models = await conn.fetch(
        "SELECT m.model_id, m.status, m.epochs_done, m.updated_at, "
        "(SELECT array_agg(DISTINCT s.hops) FROM ctq.model_states s WHERE s.run_id = m.run_id "
        " AND s.model_id = m.model_id) AS checkpoint_hops, "
        "(SELECT array_agg(DISTINCT (c.p).hops) FROM (SELECT ctq.current_state_parts(m.run_id, m.model_id) AS p) c) "
        " AS current_hops, "
        "(SELECT count(*) FROM (SELECT ctq.current_state_parts(m.run_id, m.model_id) AS p) c "
        " WHERE (c.p).array_index = -1) AS headers "
        "FROM ctq.models m WHERE m.run_id = $1", run_id)
    assert models
    for m in models:
        hops = await conn.fetch("SELECT epoch, segment, started_at, finished_at FROM ctq.hops "
                                "WHERE run_id = $1 AND model_id = $2 ORDER BY started_at", run_id, m["model_id"])
        epochs = await conn.fetch("SELECT epoch, finished_at FROM ctq.epochs WHERE run_id = $1 AND model_id = $2 "
                                  "ORDER BY epoch", run_id, m["model_id"])
        where = f"run {run_id} model {m['model_id']}"
        for before, after in zip(hops, hops[1:]):
            assert after["started_at"] >= before["finished_at"], f"{where}: overlapping hops {before} {after}"
            assert after["epoch"] >= before["epoch"], f"{where}: epochs out of order"
        per_epoch = Counter(h["epoch"] for h in hops)
        done = m["epochs_done"]
        assert [e["epoch"] for e in epochs] == list(range(done)), where
        assert all(per_epoch[e] == segments for e in range(done)), f"{where}: {per_epoch}, epochs_done {done}"
        assert set(per_epoch) <= set(range(done + 1)) and per_epoch.get(done, 0) < segments, where
        for e in epochs:
            assert e["finished_at"] == max(h["finished_at"] for h in hops if h["epoch"] == e["epoch"]), where
        assert (m["current_hops"] or []) == ([len(hops)] if hops else []), f"{where}: state of {m['current_hops']} hops"
        assert m["headers"] == (1 if hops else 0), where
        checkpoints = m["checkpoint_hops"] or []
        assert len(checkpoints) <= 1, f"{where}: checkpoints of {checkpoints} hops"
        assert all(c % segments == 0 for c in checkpoints), f"{where}: a checkpoint within an epoch: {checkpoints}"
        if hops:
            assert await stored_state(conn, run_id, m["model_id"]), where
        if hops and m["status"] in ("pending", "training"):
            assert m["updated_at"] == hops[-1]["finished_at"], f"{where}: state is not the last hop's"


async def assert_complete(conn, run_id, models, epochs, segments=2):
    hops = await conn.fetch("SELECT model_id, epoch, segment FROM ctq.hops WHERE run_id = $1", run_id)
    keys = Counter((h["model_id"], h["epoch"], h["segment"]) for h in hops)
    assert set(keys) == {(m, e, s) for m in range(1, models + 1) for e in range(epochs) for s in range(segments)}
    await assert_consistent(conn, run_id, segments)
    epochs_rows = await conn.fetchval("SELECT count(*) FROM ctq.epochs WHERE run_id = $1", run_id)
    assert epochs_rows == models * epochs
    done = await conn.fetch("SELECT epochs_done, status FROM ctq.models WHERE run_id = $1", run_id)
    assert all(r["epochs_done"] == epochs and r["status"] == "succeeded" for r in done)


async def test_kill_9_then_resume_loses_and_repeats_nothing(long_table, tmp_path, dsn, ctq_home, conn, run_cli):
    grid = write_grid(tmp_path, GRID.format(name="killed", table=long_table, epochs=3))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "killed", 3)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    await asyncio.sleep(1)  # let a hop in flight at the kill commit or die
    await assert_consistent(conn, run_id)
    hops_at_kill = await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
    listed = json.loads(run_cli("runs", "--json").stdout)
    row = next(r for r in listed if r["run_id"] == run_id)
    assert row["status"] == "stale" and row["alive"] is False  # detected as stale

    # resume by config as a cron job does (--resume auto): the same run goes on (no new run), gets
    # killed again, then resume by id
    proc = start_train(dsn, ctq_home, str(grid), "--resume", "auto", "--json")
    assert await wait_for_hops(conn, "killed", hops_at_kill + 3) == run_id
    assert await conn.fetchval("SELECT count(*) FROM ctq.runs WHERE name = 'killed'") == 1
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    await asyncio.sleep(1)
    await assert_consistent(conn, run_id)
    resumed = run_cli("train", "--resume", str(run_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["run_id"] == run_id and result["status"] == "succeeded"
    await assert_complete(conn, run_id, models=4, epochs=3)
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "succeeded"
    assert await conn.fetchval("SELECT count(*) FROM ctq.runs WHERE name = 'killed'") == 1


async def test_terminated_backend_is_retried_and_the_run_completes(long_table, tmp_path, dsn, ctq_home, conn):
    grid = write_grid(tmp_path, GRID.format(name="terminated", table=long_table, epochs=2))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "terminated", 2)
    killed = 0
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE $1 AND state = 'active'", f"ctq run {run_id} segment %")
        await asyncio.sleep(0.05)
    assert killed >= 1
    await assert_consistent(conn, run_id)  # the terminated hop left no trace
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded"
    assert result["retries"] >= 1
    await assert_complete(conn, run_id, models=4, epochs=2)


async def test_a_source_locked_by_another_session_is_waited_for_with_a_word(tmp_path, dsn, ctq_home, conn):
    """Another session holds a lock on the source (an ALTER TABLE, a LOCK TABLE): ctq train waits
    for it, as PostgreSQL does, but says who holds it (it sat at "checking" without a word: a user
    trial), and trains once the lock is let go."""
    import asyncpg

    await create_table(conn, "public.locked_src", 600, seed=6)
    grid = write_grid(tmp_path, SLOW_GRID.format(name="locked", table="public.locked_src", epochs=1).replace(
        "batch_size: [1]", "batch_size: [64]"))
    holder = await asyncpg.connect(dsn)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE public.locked_src IN ACCESS EXCLUSIVE MODE")
        proc = start_train(dsn, ctq_home, str(grid))
        deadline = time.monotonic() + 60
        while not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND query LIKE '%LOCK TABLE \"public\".\"locked_src\"%'"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"ctq train never waited for the lock: {proc.communicate()[1]}")
            await asyncio.sleep(0.1)
        await transaction.rollback()
    finally:
        await holder.close()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "waiting for public.locked_src, locked by pid " in err, err


async def test_a_terminated_control_session_is_replaced_and_the_run_stays_held(long_table, tmp_path, dsn, ctq_home,
                                                                                 conn, run_cli):
    """An administrator terminates a live run's control session, which holds the run's lock: the
    coordinator opens another and takes the lock again within a heartbeat, so ctq runs keeps
    saying running (it said "stale (coordinator gone; ctq train --resume)" until the run ended,
    while resume and rm refused it as live: a user trial on Greenplum), and the run completes."""
    grid = write_grid(tmp_path, GRID.format(name="control-lost", table=long_table, epochs=5))  # (> a heartbeat)
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "control-lost", 2)
    killed = await conn.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE application_name = $1", f"ctq run {run_id} control")
    assert killed >= 1
    deadline = time.monotonic() + 15  # a heartbeat is 5 s
    while True:
        listed = next(r for r in json.loads(run_cli("runs", "--json").stdout) if r["run_id"] == run_id)
        if listed["status"] == "running" and listed["alive"]:
            break
        assert proc.poll() is None, "the run ended before its lock was taken again"
        assert time.monotonic() < deadline, f"run {run_id} still {listed['status']} {listed['alive']} after 15 s"
        await asyncio.sleep(0.5)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"
    await assert_complete(conn, run_id, models=4, epochs=5)


async def test_a_run_whose_last_hops_committed_after_a_kill_9_is_finished_by_its_resume(long_table, tmp_path,
                                                                                        dsn, ctq_home, conn,
                                                                                        run_cli):
    """kill -9 while a run's last hops are in flight: their backends go on and commit them, so
    every hop is done but nobody recorded the run's end. --resume finishes it (exit 0, the
    leaderboard, the models succeeded, nothing trained again). Before, it said "nothing left to
    train" (exit 2), and the run stayed stale with its models interrupted for good (a user trial)."""
    grid = write_grid(tmp_path, f"""
        name: last-hops
        data: {{table: {long_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
                task: classification}}
        segments: 2
        models: [{{name: a, layers: [{{dense: 64, activation: relu}}]}}]
        search: {{space: {{learning_rate: [0.001, 0.01], batch_size: [1]}}}}
        epochs: 1
        metric: val_accuracy
    """)  # (batch 1: hops of seconds, so that the last two are seen in flight together; at batch 4
    # a clean clone's suite once saw the run end first)
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "last-hops", 2)
    deadline = time.monotonic() + 60
    while len(await hops_in_flight(conn, run_id)) < 2:  # the last two hops, one a segment
        assert time.monotonic() < deadline and proc.poll() is None, "the last hops never ran together"
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 120
    while await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) < 4:
        assert time.monotonic() < deadline, "the hops in flight at the kill never committed"
        await asyncio.sleep(0.1)
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "running"
    resumed = run_cli("train", "--resume", str(run_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "succeeded" and result["hops"] == 0 and result["best_model_id"] is not None
    assert result["notices"] == [f"run {run_id} had trained every hop before its coordinator stopped; its end is "
                                 "recorded now"]
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "succeeded"
    await assert_complete(conn, run_id, models=2, epochs=1)


async def test_a_resume_in_the_last_epoch_builds_only_the_models_still_to_come(long_table, tmp_path, dsn, ctq_home,
                                                                                 conn, run_cli):
    """kill -9 late in the last epoch, then --resume: each segment's new backend warms up (builds)
    only the models with a hop left on it, as the catalog has them at the resume (a model that has
    visited the segment in its last epoch does not come back to it), and a segment with none left
    is not warmed up. Before, every new backend built every model of the run (issue 23: a segment
    idle for seconds re-warming models it would never train again)."""
    grid = write_grid(tmp_path, GRID.format(name="late", table=long_table, epochs=2))
    total = 4 * 2 * 2  # models x epochs x segments
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "late", 1)
    # late in the last epoch (hops 8..15), with room for the hops in flight at the kill, which
    # commit, and one more the coordinator may start before the signal lands: killed at 13, all
    # 16 were once recorded (a clean clone's suite, 2026-12-07)
    while await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) < total - 5:
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    await asyncio.sleep(1)  # let a hop in flight at the kill commit or die
    hops = await conn.fetch("SELECT h.model_id, h.epoch, h.segment, m.architecture::text AS architecture "
                            "FROM ctq.hops h JOIN ctq.models m USING (run_id, model_id) WHERE h.run_id = $1", run_id)
    assert len(hops) < total, "the run ended before it was killed"
    architecture = {h["model_id"]: h["architecture"] for h in hops}
    to_come = {s: {architecture[m] for m in architecture  # (the models' compile keys differ by architecture)
                   if sum(h["model_id"] == m and h["epoch"] == 0 for h in hops) < 2
                   or not any(h["model_id"] == m and h["epoch"] == 1 and h["segment"] == s for h in hops)}
               for s in range(2)}
    resumed = run_cli("train", "--resume", str(run_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    warmed = {int(s): int(n) for s, n in re.findall(r"segment (\d+) warmed up in \S+ \((\d+) compiled step",
                                                     resumed.stderr)}
    assert warmed == {s: len(a) for s, a in to_come.items() if a}, (resumed.stderr, to_come)
    await assert_complete(conn, run_id, models=4, epochs=2)


async def test_a_crash_costs_at_most_the_training_since_each_checkpoint(tmp_path):
    """kill -9 of the whole server mid-run, while a model is mid-epoch, on a server of its own.
    Every epoch end is a checkpoint here (checkpoint_minutes: 0).

    A server crash takes no working state (files, working_states_files.sql): restarted at once, the live
    coordinator reconnects and completes the run, and every hop recorded before the crash stays as
    it was, mid-epoch ones included. A host crash (the coordinator killed too, and the working-state
    files that were never flushed lost: one gone, one cut short, one written before the last boot)
    costs each such model the training since its checkpoint: it goes back to its last completed
    epoch, whose hops stay recorded as they were, only the hops after it are trained again, and the
    resumed run says so. Both end with every hop exactly once and a consistent catalog."""
    import asyncpg

    from conftest import server_readable_tempdir
    from ctq.embedded import EmbeddedCluster

    home = server_readable_tempdir("ctq-crash-")
    server = EmbeddedCluster(home)
    dsn = server.start()
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(home))

    async def crash(name: str, host_too: bool) -> None:
        text = GRID.format(name=name, table="public.crash_src", epochs=3) + "    checkpoint_minutes: 0\n"
        grid = write_grid(tmp_path, text, f"{name}.yaml")
        conn = await asyncpg.connect(dsn)
        proc = start_train(dsn, home, str(grid), "--json")
        run_id = await wait_for_hops(conn, name, 6)  # some model has completed its first epoch
        await freeze_while_a_model_is_mid_epoch(conn, run_id)
        folder = Path(server.data_dir, "ctq_states", str(await conn.fetchval(
            "SELECT oid FROM pg_database WHERE datname = current_database()")), str(run_id))
        kill_server(server._postmaster_pid(), await conn.fetchval("SELECT pg_backend_pid()"))
        if host_too:
            proc.kill()
            lose_unflushed_files(folder)
        conn.terminate()
        time.sleep(1)
        server.start()  # crash recovery: ctq.model_states as committed
        conn = await asyncpg.connect(dsn)
        kept = "TRUE" if not host_too else "h.epoch < m.epochs_done"  # all, or the hops of completed epochs
        before = {(r["model_id"], r["epoch"], r["segment"]): r["started_at"] for r in await conn.fetch(
            "SELECT h.model_id, h.epoch, h.segment, h.started_at FROM ctq.hops h JOIN ctq.models m USING (run_id, model_id) "
            f"WHERE h.run_id = $1 AND {kept}", run_id)}
        assert before, "no model had completed an epoch before the crash"
        if host_too:
            proc.wait(timeout=30)
            resumed = subprocess.run([sys.executable, "-m", "ctq.cli", "train", "--resume", str(run_id), "--json"],
                                     capture_output=True, text=True, timeout=600, env=env)
            code, out, err = resumed.returncode, resumed.stdout, resumed.stderr
        else:
            out, err = proc.communicate(timeout=300)
            code = proc.returncode
        assert code == 0, err
        result = json.loads(out)
        assert result["status"] == "succeeded" and result["failed_models"] == {}, result
        lost = [n for n in result["notices"] if "lost the working state" in n]
        if host_too:
            assert lost and "trained again: models" in lost[0], result["notices"]
            # each model named with where it goes back to: its last checkpoint, or the start (a model
            # mid-way through its first epoch has none)
            assert re.fullmatch(r".*models \d+ \((from its checkpoint after epoch \d+|from the start: no checkpoint)\)"
                                r"(, \d+ \((from its checkpoint after epoch \d+|from the start: no checkpoint)\))*",
                                lost[0]), lost[0]
        else:
            assert not lost, lost
        await assert_complete(conn, run_id, models=4, epochs=3)
        after = {(r["model_id"], r["epoch"], r["segment"]): r["started_at"] for r in await conn.fetch(
            "SELECT model_id, epoch, segment, started_at FROM ctq.hops WHERE run_id = $1", run_id)}
        assert all(after[key] == started for key, started in before.items()), "a kept hop was trained again"
        assert not folder.exists(), "the working states of a run that succeeded are left"
        await conn.close()

    try:
        conn = await asyncpg.connect(dsn)
        await create_table(conn, "public.crash_src", 6000, seed=4)
        await conn.close()
        await crash("crash-server", host_too=False)
        await crash("crash-host", host_too=True)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def lose_unflushed_files(folder: Path) -> None:
    """What a host crash may do to working-state files that were never flushed (the server does not
    flush them: working_states_files.sql): the first is gone, the second cut short, the rest have the boot
    id of a boot before the last (as every file written before a crash has after the reboot)."""
    files = sorted(folder.iterdir())
    assert files, f"no working state in {folder}"
    files[0].unlink()
    for path in files[1:2]:
        os.truncate(path, path.stat().st_size // 2)
    for path in files[2:]:
        with open(path, "r+b") as f:
            f.seek(len(b"CTQWS\x01\n"))
            f.write(b"0" * 36)


async def freeze_while_a_model_is_mid_epoch(conn, run_id: int) -> None:
    """Returns holding, in an open transaction of ``conn``, a lock that keeps every hop from
    committing, at an instant when some model of the run is mid-epoch (an odd number of hops on 2
    segments): its newest state is a working state, which a crash takes. (Without the lock, the
    hop in flight could still complete that model's epoch, a checkpoint, before the crash.)"""
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "no model was ever mid-epoch"
        await conn.execute("BEGIN; LOCK TABLE ctq.hops IN SHARE MODE")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ctq.hops WHERE run_id = $1 GROUP BY model_id "
                               "HAVING count(*) % 2 = 1)", run_id):
            return
        await conn.execute("ROLLBACK")
        await asyncio.sleep(0.02)


def kill_server(postmaster: int, lock_holder: int) -> None:
    """kill -9 of the whole server at once, as a host crash or the OOM killer of its container: the
    postmaster and every backend. (After a kill -9 of the postmaster alone its backends run on until
    they notice, and a hop in flight may still commit.) The backend holding
    freeze_while_a_model_is_mid_epoch's lock dies last, so no hop commits meanwhile."""
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == postmaster]
    for pid in [postmaster] + [c for c in children if c != lock_holder] + [lock_holder]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


async def test_sigint_interrupts_quickly_and_the_run_resumes(long_table, tmp_path, dsn, ctq_home, conn, run_cli):
    grid = write_grid(tmp_path, GRID.format(name="interrupted", table=long_table, epochs=3))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "interrupted", 2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "interrupted"
    busy = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 "
                               "AND state = 'active'", f"ctq run {run_id} segment %")
    assert busy == 0  # the in-flight training queries were cancelled before the process exited
    resumed = run_cli("train", "--resume", str(run_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    await assert_complete(conn, run_id, models=4, epochs=3)


async def test_a_resume_after_the_source_changed_is_refused_unless_told_to_keep_the_pack(tmp_path, dsn, ctq_home,
                                                                                        conn, run_cli):
    """The source grew and its labels flipped while the run was stopped: resuming would go on
    training on rows that are no longer there. Refused (exit 2, one line, the run untouched);
    --keep-pack resumes on the pack as it was and says so."""
    await create_table(conn, "public.changing_src", 4000, seed=14)
    grid = write_grid(tmp_path, GRID.format(name="changing-src", table="public.changing_src", epochs=3))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "changing-src", 2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 130
    await conn.execute("INSERT INTO public.changing_src SELECT * FROM public.changing_src LIMIT 2000")
    await conn.execute("UPDATE public.changing_src SET label = 2 - label")
    hops = await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)

    refused = run_cli("train", "--resume", str(run_id))
    assert refused.returncode == 2, refused.stderr
    *_, line = refused.stderr.strip().splitlines()  # (after the log lines of the stages)
    assert "public.changing_src has changed since it was packed" in line and "--keep-pack" in line, line
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "interrupted"
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) == hops

    kept = run_cli("train", "--resume", str(run_id), "--keep-pack", "--json")
    assert kept.returncode == 0, kept.stderr
    notices = json.loads(kept.stdout)["notices"]
    assert len(notices) == 1 and "has changed since it was packed" in notices[0], notices
    # said on stderr as the resume starts, --json or not (it was said at the end, and not with --json)
    lines = kept.stderr.strip().splitlines()
    said = [i for i, text in enumerate(lines) if text.startswith("note: ") and "(--keep-pack)" in text]
    assert len(said) == 1 and any("hop" in text for text in lines[said[0] + 1:]), kept.stderr
    await assert_complete(conn, run_id, models=4, epochs=3)


async def test_an_upgrade_keeps_the_working_states_an_earlier_ctq_kept_as_rows(tmp_path, dsn, ctq_home, conn,
                                                                             run_cli):
    """Before working states were files, ctq kept them as rows of the unlogged ctq.hop_states. The
    upgrade (here the resume itself, the first command after a new version's checkout) makes them
    files: a run whose coordinator was killed resumes from its last hops, none trained again. (The
    upgrade dropped the table: the run trained again since its checkpoints, or from the start, and
    said a crash lost them; and the resume of a stale run refused itself as a live run, since it
    held the run's lock when it upgraded: a user trial of an upgrade.)"""
    await create_table(conn, "public.upgrade_src", 4000, seed=15)
    grid = write_grid(tmp_path, GRID.format(name="upgrade-rows", table="public.upgrade_src", epochs=3))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "upgrade-rows", 3)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60  # its segments' backends end once their hop is over
    while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                              f"ctq run {run_id} %"):
        assert time.monotonic() < deadline, "the killed run's sessions did not end"
        await asyncio.sleep(0.2)
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "running"  # stale
    # the catalog as the earlier ctq left it: its working states as rows, no files
    await conn.execute("CREATE UNLOGGED TABLE ctq.hop_states (LIKE ctq.model_states INCLUDING ALL)")
    moved = await conn.fetchval(
        "WITH w AS (INSERT INTO ctq.hop_states SELECT $1, m.model_id, (m.p).hops, (m.p).array_index, "
        "(m.p).byte_offset, (m.p).data FROM (SELECT model_id, ctq.working_state_parts($1, model_id) AS p "
        "FROM ctq.models WHERE run_id = $1) m RETURNING model_id) SELECT count(DISTINCT model_id) FROM w", run_id)
    assert moved > 0
    await conn.fetchval("SELECT ctq.drop_working_states($1)", run_id)
    before = dict(await conn.fetch("SELECT (model_id, epoch, segment)::text, started_at FROM ctq.hops "
                                   "WHERE run_id = $1", run_id))
    await conn.execute("""UPDATE ctq.meta SET value = '"an earlier ctq"' WHERE key = 'install_sha'""")

    resumed = run_cli("train", "--resume", str(run_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "ctq's server code in this database upgraded to this ctq's" in resumed.stderr, resumed.stderr
    assert not [n for n in json.loads(resumed.stdout)["notices"] if "lost the working state" in n], resumed.stdout
    assert await conn.fetchval("SELECT to_regclass('ctq.hop_states')") is None
    await assert_complete(conn, run_id, models=4, epochs=3)
    after = dict(await conn.fetch("SELECT (model_id, epoch, segment)::text, started_at FROM ctq.hops "
                                  "WHERE run_id = $1", run_id))
    assert all(after[key] == started for key, started in before.items()), "a hop before the upgrade was trained again"


async def test_two_concurrent_runs_both_complete(tmp_path, dsn, ctq_home, conn):
    """Started together on a source never packed: one pack, used by both runs."""
    await create_table(conn, "public.together_src", 8000, seed=12)
    first = write_grid(tmp_path, GRID.format(name="together-1", table="public.together_src", epochs=1), "one.yaml")
    second = write_grid(tmp_path, GRID.format(name="together-2", table="public.together_src", epochs=1), "two.yaml")
    procs = [start_train(dsn, ctq_home, str(first), "--json"), start_train(dsn, ctq_home, str(second), "--json")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    results = [json.loads(o[0]) for o in outs]
    ids = [r["run_id"] for r in results]
    assert ids[0] != ids[1]
    packs = await conn.fetch("SELECT DISTINCT pack_id FROM ctq.runs WHERE run_id = ANY($1::bigint[])", ids)
    assert len(packs) == 1
    assert await conn.fetchval("SELECT count(*) FROM ctq.packs WHERE source_table LIKE '%together_src%'") == 1
    assert sorted(r["pack_reused"] for r in results) == [False, True]
    for run_id in ids:
        await assert_complete(conn, run_id, models=4, epochs=1)


async def test_a_diverging_model_fails_alone(conn, tmp_path, run_cli):
    await conn.execute("DROP TABLE IF EXISTS public.reg_src")
    await conn.execute("CREATE TABLE public.reg_src AS SELECT g::float8 AS x1, (g % 7)::float8 AS x2, "
                       "(3 * g + 1)::float8 AS y FROM generate_series(1, 400) g")
    grid = write_grid(tmp_path, """
        name: diverging
        data: {table: public.reg_src, features: [x1, x2], label: y, task: regression}
        segments: 2
        models:
          - name: lin
            layers: [{dense: 8, activation: relu}]
        search:
          space:
            optimizer: [sgd]
            learning_rate: [0.001, 1.0e+12]
            batch_size: [20]
        epochs: 2
        metric: val_mae
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "failed"
    assert list(result["failed_models"]) == ["2"]
    assert "diverged" in result["failed_models"]["2"]
    assert result["failed_models"]["2"].startswith("training diverged: loss is nan"), result  # issue 21 point 8
    statuses = dict(await conn.fetch("SELECT model_id, status FROM ctq.models WHERE run_id = $1", result["run_id"]))
    assert statuses == {1: "succeeded", 2: "failed"}
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1 AND model_id = 1",
                               result["run_id"]) == 4
    # every model ended: none keeps a working state (files in the data directory), though the run failed
    folder = Path(await conn.fetchval("SELECT current_setting('data_directory')"), "ctq_states", str(
        await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")), str(result["run_id"]))
    assert not folder.exists() or not list(folder.iterdir()), sorted(p.name for p in folder.iterdir())
    # without --json, each failed model's reason once, under the leaderboard, and one error line
    plain = run_cli("train", str(grid), "--name", "diverging-again")
    assert plain.returncode == 1
    assert plain.stdout.count("model 2 (lin/sgd/lr=1e+12/bs=20) failed: training diverged") == 1, plain.stdout
    assert "model 2 failed:" not in plain.stderr, plain.stderr  # (the progress log says it once, as it happens)
    assert plain.stderr.strip().splitlines()[-1] == (f"error: run {json.loads(proc.stdout)['run_id'] + 1}: 1 of 2 "
                                                     "models failed (why: under the leaderboard); the others trained "
                                                     "and are ranked"), plain.stderr
    # ctq models says why, under the leaderboard; --json has each model's message
    shown = run_cli("models", str(result["run_id"]))
    assert shown.returncode == 0 and "model 2 (lin/sgd/lr=1e+12/bs=20) failed:" in shown.stdout, shown.stdout
    assert "diverged" in shown.stdout
    board = {r["model_id"]: r for r in json.loads(run_cli("models", str(result["run_id"]), "--json").stdout)}
    assert "diverged" in board[2]["message"] and board[1]["message"] is None
    # every model ended: a resume has nothing to do (it said "4 hops to go", then trained none)
    resumed = run_cli("train", "--resume", str(result["run_id"]))
    assert resumed.returncode == 2 and resumed.stderr.strip() == (
        f"error: run {result['run_id']} has nothing left to train: every model ended (1 failed: see ctq models "
        f"{result['run_id']})"), resumed.stderr


async def test_segments_over_their_memory_budget_stream_their_data(tmp_path, run_cli, conn):
    """A segment whose data does not fit memory_budget_mb trains by streaming its buffers on each
    hop (nothing cached) instead of being refused, and the models still learn."""
    await conn.execute("DROP TABLE IF EXISTS public.wide_src")
    await conn.execute("CREATE TABLE public.wide_src AS SELECT array_fill((g % 7)::float8, ARRAY[1000]) AS x, "
                       "(g % 7 > 3)::int AS label FROM generate_series(1, 8000) g")  # ~20 MiB per segment
    grid = write_grid(tmp_path, """
        name: budget
        data: {table: public.wide_src, features: [x], label: label, task: classification, buffer_rows: 500}
        segments: 2
        memory_budget_mb: 5
        models: [{name: m, layers: [{dense: 8}]}]
        search: {space: {learning_rate: [0.01], batch_size: [50]}}
        epochs: 2
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "stream their data" in proc.stderr and "memory_budget_mb 5" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["best_metric"] > 0.9
    hops = await conn.fetch("SELECT rows FROM ctq.hops WHERE run_id = $1", result["run_id"])
    assert len(hops) == 4 and all(h["rows"] > 2500 for h in hops)  # about 3,200 training rows a segment


# Hops long enough (batch size 1 on 24,000 rows a segment) that only a working server-side cancel or
# termination ends them in time: a check that passed because a hop ended on its own would be no check.
SLOW_GRID = """
    name: {name}
    data: {{table: {table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
    segments: 2
    models:
      - name: slow
        layers: [{{dense: 64, activation: relu}}]
    search:
      space:
        learning_rate: [0.001, 0.01]
        batch_size: [1]
    epochs: {epochs}
    metric: val_accuracy
"""


@pytest.fixture(scope="module")
async def slow_table(dsn):
    import asyncpg

    conn = await asyncpg.connect(dsn)
    await create_table(conn, "public.slow_src", 60000, seed=4)
    await conn.close()
    return "public.slow_src"


async def hops_in_flight(conn, run_id) -> set[int]:
    """Backends of the run that are running a hop statement (not the warm-up)."""
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1 AND state = 'active' "
                            "AND query LIKE '%ctq.record_hop%'", f"ctq run {run_id} segment %")
    return {r["pid"] for r in rows}


async def start_slow_run(conn, dsn, ctq_home, tmp_path, name, table, epochs=1):
    """A run with both segments one second into a long hop; returns (process, run_id, hop pids)."""
    grid = write_grid(tmp_path, SLOW_GRID.format(name=name, table=table, epochs=epochs), f"{name}.yaml")
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run_id = await running_run(conn, name) if await conn.fetchval("SELECT to_regclass('ctq.runs') IS NOT NULL") \
            else None
        if run_id is not None and len(pids := await hops_in_flight(conn, run_id)) == 2:
            await asyncio.sleep(1)
            assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) == 0
            return proc, run_id, pids, grid
        await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError(f"run {name}: no two hops in flight after 180 s; {proc.communicate()[1]}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_interrupt_cancels_long_hops_within_about_a_second(sig, slow_table, tmp_path, dsn, ctq_home, conn):
    proc, run_id, pids, _ = await start_slow_run(conn, dsn, ctq_home, tmp_path, f"slow-{sig.name}", slow_table)
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130, proc.stderr.read()
    assert elapsed < 3, f"exit took {elapsed:.1f} s"
    assert not await hops_in_flight(conn, run_id)  # the server cancelled them, not the hops' own end
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) == 0
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "interrupted"
    await assert_consistent(conn, run_id)


async def test_kill_9_orphan_hops_are_stopped_before_the_resumed_session_trains(slow_table, tmp_path, dsn,
                                                                                  ctq_home, conn):
    proc, run_id, orphans, grid = await start_slow_run(conn, dsn, ctq_home, tmp_path, "orphaned", slow_table)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    await asyncio.sleep(0.5)
    assert await hops_in_flight(conn, run_id) == orphans  # still training for a coordinator that is gone
    resumed = start_train(dsn, ctq_home, str(grid), "--resume", "--json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        in_flight = await hops_in_flight(conn, run_id)
        alive = {r["pid"] for r in await conn.fetch("SELECT pid FROM pg_stat_activity")}
        if in_flight - orphans:  # the resumed session is training: no orphan may be left by now
            assert not orphans & alive, "the resumed session trains while the old session's hops still run"
            break
        await asyncio.sleep(0.05)
    else:
        resumed.kill()
        raise AssertionError(f"the resumed session never trained: {resumed.communicate()[1]}")
    resumed.send_signal(signal.SIGINT)
    assert resumed.wait(timeout=30) == 130
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) == 0  # orphans: nothing
    await assert_consistent(conn, run_id)


async def test_statement_timeout_interrupts_a_hop_within_about_a_second(slow_table, tmp_path, dsn, ctq_home, conn):
    """A hop run by hand in a session with statement_timeout = 1s stops within about a second and
    records nothing (ctq's own sessions set statement_timeout = 0)."""
    import asyncpg

    from ctq.api import load_plan
    from ctq.engines import engine_named
    from ctq.metrics import Metric
    from ctq.rules import HopRequest

    proc, run_id, _, _ = await start_slow_run(conn, dsn, ctq_home, tmp_path, "timed-out", slow_table)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    plan = await load_plan(conn, run_id)
    engine = engine_named(plan.engine)
    model = plan.specs[1]
    common = {"pack_id": plan.pack["pack_id"], "task": plan.pack["settings"]["task"],
              "stats": plan.pack["stats"].for_server(), "cores": [0], "metric": Metric(plan.metric).kind}
    warmup = HopRequest(**common, action="warmup", models=[(model.architecture, model.hyperparameters)])
    params = HopRequest(**common, action="train", arch=model.architecture, hyper=model.hyperparameters,
                        seed=model.seed).to_json()
    statements = engine.hop_statements(0, plan.pack["pack_id"], plan.pack["table_name"])
    session = await asyncpg.connect(dsn)
    try:  # as the coordinator does: the backend has Keras loaded, the data decoded, the model built
        await session.fetchval(statements.warmup, warmup.to_json())
        await session.execute("SET statement_timeout = '1s'")
        t0 = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError):
            await engine.run_hop(session, statements, run_id, 1, 0, False, params, 0)
        elapsed = time.monotonic() - t0
    finally:
        await session.close()
    assert elapsed < 2.5, f"statement_timeout 1s ended the hop after {elapsed:.1f} s"
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) == 0
    await assert_consistent(conn, run_id)


async def test_a_live_run_cannot_be_driven_twice(slow_table, tmp_path, dsn, ctq_home, conn, run_cli):
    """While a coordinator drives a run: `--resume` (by id or by config) is refused, and so is a
    second coordinator that skips that check (the run's lock); the live run is left undisturbed."""
    from ctq import api
    from ctq.errors import RunFailed

    proc, run_id, pids, grid = await start_slow_run(conn, dsn, ctq_home, tmp_path, "driven-once", slow_table,
                                                 epochs=4)  # outlasts the refusals below
    try:
        for args in (["--resume", str(run_id)], [str(grid), "--resume"]):
            refused = run_cli("train", *args, "--json")
            assert refused.returncode == 2, refused.stderr  # a usage error, as ctq rm of a live run
            assert f"run {run_id} is still being driven by a live ctq process" in refused.stderr
        plan = await api.load_plan(conn, run_id)
        with pytest.raises(RunFailed, match=f"run {run_id} is being driven by another ctq process"):
            await api.drive(dsn, plan)
        # the live run was not touched: still running, its coordinator alive, its hops going on
        status = await conn.fetchrow("SELECT status, message FROM ctq.runs WHERE run_id = $1", run_id)
        assert tuple(status) == ("running", None)
        assert proc.poll() is None
        assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) < 2 * 2 * 4
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 130
    assert await conn.fetchval("SELECT count(*) FROM ctq.runs WHERE name = 'driven-once'") == 1
    await assert_consistent(conn, run_id)


async def test_resuming_a_succeeded_run_is_refused_and_changes_nothing(small_table, tmp_path, conn, run_cli):
    grid = write_grid(tmp_path, """
        name: finished
        data: {table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}
        segments: 2
        models: [{name: m, layers: [{dense: 8}]}]
        search: {space: {batch_size: [100]}}
        epochs: 1
        metric: val_accuracy
    """)
    done = run_cli("train", str(grid), "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    before = await conn.fetch("SELECT h::text FROM ctq.hops h WHERE run_id = $1 ORDER BY 1", run_id)
    run_before = await conn.fetchval("SELECT r::text FROM ctq.runs r WHERE run_id = $1", run_id)
    refused = run_cli("train", "--resume", str(run_id))
    assert refused.returncode == 2
    assert f"run {run_id} already succeeded" in refused.stderr
    assert await conn.fetch("SELECT h::text FROM ctq.hops h WHERE run_id = $1 ORDER BY 1", run_id) == before
    assert await conn.fetchval("SELECT r::text FROM ctq.runs r WHERE run_id = $1", run_id) == run_before


async def test_a_refused_coordinator_records_nothing_on_a_run_it_never_drove(small_table, tmp_path, dsn, conn,
                                                                             run_cli):
    import asyncpg

    from ctq import api, catalog
    from ctq.errors import RunFailed

    grid = write_grid(tmp_path, ONE_MODEL_ON_SMALL.format(name="not-yours", batch=100, epochs=1) + "metric: val_accuracy\n")
    done = run_cli("train", str(grid), "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    plan = await api.load_plan(conn, run_id)
    holder = await asyncpg.connect(dsn)  # stands for the live coordinator that finishes meanwhile
    assert await catalog.lock_run(holder, run_id)
    second = asyncio.create_task(api.drive(dsn, plan))
    await asyncio.sleep(6)  # the second coordinator has given up on the lock (after about 5 s)
    await holder.close()  # ... and the live one ends, letting go of the lock
    with pytest.raises(RunFailed, match="being driven by another ctq process"):
        await second
    assert await conn.fetchval("SELECT status FROM ctq.runs WHERE run_id = $1", run_id) == "succeeded"


async def test_a_hop_failing_past_the_retry_limit_fails_the_run_with_the_reason(long_table, tmp_path, dsn,
                                                                                ctq_home, conn, run_cli):
    """Segment 0's backend is terminated again and again: after ``retries`` (grid.yaml; 2 here,
    the default 5 waits 15.5 s) retries of one hop the run stops with exit 3 (the database cannot
    be used now: a retry later may help, as docs/cli.md's exit codes say), saying which hop failed
    how often and why and how to resume; what was recorded is consistent, and the cron pattern
    (--resume auto) then goes on with the run to its end."""
    grid = write_grid(tmp_path, GRID.format(name="hopeless", table=long_table, epochs=2) + "    retries: 2\n")
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "hopeless", 1)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        await conn.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = $1", f"ctq run {run_id} segment 0")
        await asyncio.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "segment 0) failed 3 times, last:" in err and "terminat" in err
    assert f"resume the run with `ctq train --resume {run_id}`" in err
    run = await conn.fetchrow("SELECT status, message FROM ctq.runs WHERE run_id = $1", run_id)
    assert run["status"] == "failed" and "failed 3 times" in run["message"]
    await assert_consistent(conn, run_id)
    resumed = run_cli("train", str(grid), "--resume", "auto", "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id
    await assert_complete(conn, run_id, models=4, epochs=2)


class LosingProxy:
    """A relay between ctq and the server (a unix socket in front of the server's) that loses the
    reply of the ``cut``-th hop statement that succeeded: it lets the server run the statement to
    its end (the server sends ReadyForQuery only once the hop's transaction has committed), then
    closes both sides instead of passing the reply on, as a network that fails right after COMMIT.
    It reads just enough of the wire protocol to know a hop: a Bind of a statement parsed from a
    query calling ctq.record_hop.

    With ``fatal=True`` it passes the reply on, then ends the server's side and sends the client
    the FATAL a terminated backend sends, holding the client's socket open for a second before it
    closes it, as a server does: the window between a backend's FATAL and the socket's end, in
    which the connection still looks open. (Held open for ever, a hop already sent would wait for
    a ReadyForQuery no server sends.)"""

    FATAL = b"".join(b"%c%s\0" % (code, text) for code, text in (
        (ord("S"), b"FATAL"), (ord("V"), b"FATAL"), (ord("C"), b"57P01"),
        (ord("M"), b"terminating connection due to administrator command"))) + b"\0"

    def __init__(self, cluster, cut: int, fatal: bool = False):
        self.upstream = f"{cluster.socket_dir}/.s.PGSQL.{cluster.port}"
        self.dir = tempfile.mkdtemp(prefix="ctq-proxy-")
        self.dsn = cluster.dsn.split("?", 1)[0] + f"?host={self.dir}&port=5999"
        self.cut, self.fatal, self.hops, self.lost = cut, fatal, 0, 0

    async def __aenter__(self):
        self.server = await asyncio.start_unix_server(self._relay, path=f"{self.dir}/.s.PGSQL.5999")
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _relay(self, client_in, client_out):
        server_in, server_out = await asyncio.open_unix_connection(self.upstream)
        hop_statements: set[bytes] = set()
        in_hop = severed = False

        async def message(stream):
            head = await stream.readexactly(5)
            return head + await stream.readexactly(int.from_bytes(head[1:], "big") - 4)

        async def upstream():
            nonlocal in_hop
            size = await client_in.readexactly(4)  # the startup message has no type byte
            server_out.write(size + await client_in.readexactly(int.from_bytes(size, "big") - 4))
            while True:
                msg = await message(client_in)
                if severed:
                    continue
                fields = msg[5:].split(b"\0")
                if msg[:1] == b"P":  # Parse: statement name, query
                    (hop_statements.add if b"ctq.record_hop(" in fields[1] else hop_statements.discard)(fields[0])
                elif msg[:1] == b"B" and fields[1] in hop_statements:  # Bind: portal, statement name
                    in_hop = True
                server_out.write(msg)
                await server_out.drain()

        async def downstream():
            nonlocal in_hop, severed
            held = []
            while True:
                msg = await message(server_in)
                if not in_hop:
                    client_out.write(msg)
                    await client_out.drain()
                    continue
                held.append(msg)
                if msg[:1] == b"Z":  # the hop's transaction has ended
                    in_hop = False
                    if not any(m[:1] == b"E" for m in held):
                        self.hops += 1
                        if self.hops == self.cut and not self.fatal:
                            self.lost += 1
                            return
                    client_out.writelines(held)
                    held = []
                    await client_out.drain()
                    if self.fatal and self.hops == self.cut and not severed:
                        severed = True
                        server_out.close()
                        client_out.write(b"E" + (len(self.FATAL) + 4).to_bytes(4, "big") + self.FATAL)
                        await client_out.drain()
                        self.lost += 1
                        await asyncio.sleep(1)
                        return

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (server_out, client_out):
            writer.close()


LOST_GRID = """
    name: {name}
    data: {{table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
    segments: 2
    models: [{{name: m, layers: [{{dense: 8, activation: relu}}]}}]
    search: {{space: {{learning_rate: [0.01, 0.001], batch_size: [{batch}]}}}}
    epochs: {epochs}
    metric: val_accuracy
"""


async def test_a_hop_whose_reply_is_lost_after_its_commit_is_done_once(small_table, cluster, tmp_path, ctq_home,
                                                                       conn):
    """The connection drops after the third hop's COMMIT, before its reply reaches ctq: the retry
    finds the hop in the catalog and takes it as done (training again would start from the state it
    already advanced): every hop exactly once, no model failed."""
    grid = write_grid(tmp_path, LOST_GRID.format(name="lost-reply", batch=128, epochs=2))
    async with LosingProxy(cluster, cut=3) as proxy:
        code, out, err = await ctq_cli(proxy.dsn, ctq_home, "train", str(grid), "--json")
    assert proxy.lost == 1
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["failed_models"] == {} and result["retries"] >= 1, result
    assert result["hops"] == 2 * 2 * 2
    await assert_complete(conn, result["run_id"], models=2, epochs=2)


async def test_a_backend_ended_between_two_hops_is_a_retry_not_a_failed_model(small_table, cluster, tmp_path,
                                                                              ctq_home, conn):
    """A segment's backend ends (its FATAL arrives) after the second hop's reply, before the
    socket closes: the next hop on that connection finds it broken. Seen in CI as "model 2
    failed: cannot switch to state 12; another operation (2) is in progress": a connection lost
    is a retry, never the model's failure."""
    grid = write_grid(tmp_path, LOST_GRID.format(name="fatal-between", batch=128, epochs=2))
    async with LosingProxy(cluster, cut=2, fatal=True) as proxy:
        code, out, err = await ctq_cli(proxy.dsn, ctq_home, "train", str(grid), "--json")
    assert proxy.lost == 1
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["failed_models"] == {} and result["retries"] >= 1, result
    await assert_complete(conn, result["run_id"], models=2, epochs=2)


async def test_a_lost_reply_in_a_resumed_session_is_done_once(small_table, cluster, tmp_path, dsn, ctq_home, conn):
    """The same in the session that resumes a run killed with kill -9: the first hop the resumed
    session commits loses its reply; the run completes with every hop exactly once."""
    grid = write_grid(tmp_path, LOST_GRID.format(name="lost-resumed", batch=16, epochs=8))  # (hops of ~30 ms: enough to be killed mid-run)
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = await wait_for_hops(conn, "lost-resumed", 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    await asyncio.sleep(1)
    assert await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id) < 2 * 8 * 2 - 1
    async with LosingProxy(cluster, cut=1) as proxy:
        code, out, err = await ctq_cli(proxy.dsn, ctq_home, "train", "--resume", str(run_id), "--json")
    assert proxy.lost == 1
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["failed_models"] == {} and result["retries"] >= 1, result
    await assert_complete(conn, run_id, models=2, epochs=8)

"""Unattended use (cron, make, scripts): exit codes, one JSON document per outcome, resumable by
name, progress in logs, stale runs, reproducible weights. All through the real CLI."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import create_table, read_terminal, stored_state, write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRID = """
    name: unattended
    data:
      table: public.unattended
      features: [f1, f2, f3, f4, f5, f6, f7, f8]
      label: label
      task: classification
    segments: 2
    models:
      - name: m
        layers: [{dense: 64, activation: relu}, {dense: 64, activation: relu}]
    search:
      seed: 4
      space: {learning_rate: [0.003, 0.03], batch_size: [8]}  # hops long enough to be killed mid-run
    epochs: 3
    metric: val_accuracy
"""
TOTAL_HOPS = 2 * 2 * 3  # models x segments x epochs


def start(dsn, ctq_home, *args):
    """ctq as started from a terminal: SIGHUP at its default even when the suite itself runs under
    nohup (which ctq honours by ignoring it, as it should)."""
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home))
    return subprocess.Popen([sys.executable, "-m", "ctq.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))


async def wait_for(conn, query, *args, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await conn.fetchval(query, *args)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {query}")


async def hops_of(conn, run_id):
    return await conn.fetchval("SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)


# ------------------------------------------------------------------ without training
async def test_help_states_exit_codes_and_environment(run_cli):
    out = run_cli("--help").stdout
    for text in ("CTQ_DSN", "CTQ_HOME", "130", "malformed DSN", "usage or configuration error"):
        assert text in out


async def test_runs_with_a_negative_limit_is_a_usage_error(run_cli):
    proc = run_cli("runs", "--limit", "-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--limit" in proc.stderr
    proc = run_cli("runs", "--limit", "-1", "--json")
    doc = json.loads(proc.stdout)
    assert (proc.returncode, doc["status"], doc["exit_code"]) == (2, "error", 2) and "--limit" in doc["error"]


@pytest.mark.parametrize("dsn, reason", [("postgresql://x:notaport/db", "malformed DSN"),
                                         ("postgresql://nobody@127.0.0.1:1/x", "cannot connect")])
async def test_an_unusable_database_is_exit_code_3_not_a_training_failure(run_cli, dsn, reason):
    proc = run_cli("runs", "--json", env={"CTQ_DSN": dsn})
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 3 and reason in doc["error"] and doc["run_id"] is None
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1  # one unwrapped line


async def test_a_json_error_about_a_named_run_names_it(run_cli, tmp_path):
    """issue 21 point 8: `export 999999 --json` said run_id null, though the run was named."""
    proc = run_cli("export", "999999", str(tmp_path / "m.keras"), "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc["run_id"] == 999999 and "999999" in doc["error"], doc


async def test_a_configuration_error_with_json_is_a_json_document(run_cli, tmp_path):
    grid = write_grid(tmp_path, GRID.replace("epochs: 3", "epochs: three"))
    proc = run_cli("train", str(grid), "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc["exit_code"] == 2 and "epochs" in doc["error"]
    contradiction = run_cli("train", str(grid), "--reproducible", "--schedule", "bsp", "--json")
    assert contradiction.returncode == 2 and "--reproducible" in json.loads(contradiction.stdout)["error"]


async def test_doctor_only_reads(run_cli, conn, cluster):
    await conn.execute("DROP DATABASE IF EXISTS doctor_fresh")
    await conn.execute("CREATE DATABASE doctor_fresh")
    base, query = cluster.dsn.split("?", 1)
    fresh = f"{base.rsplit('/', 1)[0]}/doctor_fresh?{query}"
    proc = run_cli("doctor", "--json", env={"CTQ_DSN": fresh})
    assert proc.returncode == 3
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert not checks["ctq schema"]["ok"] and "ctq install" in checks["ctq schema"]["fix"]
    # a listing there says so, rather than looking like an empty catalog (a wrong database name)
    listed = run_cli("runs", "--json", env={"CTQ_DSN": fresh})
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert "note: ctq is not installed in this database yet" in listed.stderr, listed.stderr
    # and a command on a run, rather than "no run with id 1" alone
    for command in (["models", "1"], ["report", "1", "--out", "-"], ["rm", "1", "--yes"], ["evaluate", "1",
                                                                                            "--table", "t"]):
        named = run_cli(*command, env={"CTQ_DSN": fresh})
        assert named.returncode == 2, (command, named.stderr)
        assert "no run with id 1 (ctq is not installed in this database: is it the one you meant?)" in named.stderr, \
            (command, named.stderr)
    assert run_cli("doctor", "--json", env={"CTQ_DSN": fresh}).returncode == 3  # and still nothing installed there
    import asyncpg

    other = await asyncpg.connect(fresh)
    try:
        assert await other.fetchval("SELECT to_regnamespace('ctq') IS NULL")  # nothing was installed
    finally:
        await other.close()
        await conn.execute("DROP DATABASE doctor_fresh")


@pytest.mark.parametrize("path, reason", [("/does/not/exist", "no such directory on the database server"),
                                          ("site-packages", "expected an absolute path"),
                                          # any local user could plant a module the server imports
                                          ("/tmp", "writable by every user of that machine")])
async def test_install_refuses_a_python_path_the_server_cannot_use(run_cli, conn, path, reason):
    run_cli("install")
    before = await conn.fetchval("SELECT value FROM ctq.meta WHERE key = 'python_path'")
    proc = run_cli("install", "--python-path", path)
    assert proc.returncode == 2 and reason in proc.stderr
    assert await conn.fetchval("SELECT value FROM ctq.meta WHERE key = 'python_path'") == before


# ------------------------------------------------------------------ one run, three sessions
@pytest.fixture(scope="module")
async def table(dsn):
    import asyncpg

    c = await asyncpg.connect(dsn)
    await create_table(c, "public.unattended", 8000, seed=11)
    await c.close()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return write_grid(tmp_path_factory.mktemp("unattended"), GRID)


async def test_a_named_run_interrupted_killed_and_resumed_by_name(table, grid, dsn, ctq_home, conn, run_cli,
                                                                  tmp_path):
    # session 1: a cron-style run with --json and no terminal; SIGINT after its first epoch
    run_cli("install")
    proc = start(dsn, ctq_home, "train", str(grid), "--name", "nightly", "--reproducible", "--json")
    run_id = await wait_for(conn, "SELECT max(run_id) FROM ctq.runs WHERE name = 'nightly' AND status = 'running'")
    await wait_for(conn, "SELECT count(*) FROM ctq.epochs WHERE run_id = $1", run_id)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert json.loads(out) == {"status": "interrupted", "error": json.loads(out)["error"], "exit_code": 130,
                               "run_id": run_id}
    # the log shows a live run: stages, an epoch with its metrics and an ETA; no escape codes
    assert "packing public.unattended" in err and "warming up 2 segments" in err
    assert "epoch 1/3: loss" in err and "val_accuracy" in err and "ETA" in err
    assert "\x1b" not in out + err
    # an epoch's line gives the epoch's train loss and accuracy, as ctq.epochs (the leaderboard) has
    # them, not its last hop's
    lines = re.findall(r"model (\d+) \(.*?\) epoch 1/3: loss ([\d.]+) accuracy ([\d.]+)", err)
    assert lines, err
    for model_id, loss, value in lines:
        row = await conn.fetchrow("SELECT train_loss, train_metric FROM ctq.epochs WHERE run_id = $1 AND model_id = $2 "
                                  "AND epoch = 0", run_id, int(model_id))
        assert (loss, value) == (f"{row['train_loss']:.4f}", f"{row['train_metric']:.4f}"), (model_id, err)

    # options --resume would otherwise silently drop are refused
    bsp = run_cli("train", str(grid), "--name", "nightly", "--resume", "--schedule", "bsp")
    assert bsp.returncode == 2 and "keeps its schedule" in bsp.stderr
    renamed = run_cli("train", "--resume", str(run_id), "--name", "other")
    assert renamed.returncode == 2 and "keeps its name" in renamed.stderr
    rule = run_cli("train", "--resume", str(run_id), "--scheduling", "random")
    assert rule.returncode == 2 and "keeps its scheduling" in rule.stderr and "'cost'" in rule.stderr
    moot = run_cli("train", str(grid), "--schedule", "bsp", "--scheduling", "random")
    assert moot.returncode == 2 and "--scheduling chooses among eligible models under MOP" in moot.stderr
    other = write_grid(tmp_path, GRID.replace("epochs: 3", "epochs: 4"), "other.yaml")
    different = run_cli("train", str(other), "--resume", str(run_id))
    assert different.returncode == 2 and "different configuration" in different.stderr

    # session 2: resumed by grid and name (docs/unattended.md's cron pattern), then kill -9: stale
    proc = start(dsn, ctq_home, "train", str(grid), "--name", "nightly", "--resume", "--quiet")
    done = await hops_of(conn, run_id)
    await wait_for(conn, "SELECT count(*) > $2 FROM ctq.hops WHERE run_id = $1", run_id, done)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stderr.read() == ""  # --quiet
    listed = []
    for _ in range(2):
        listed.append(next(r for r in json.loads(run_cli("runs", "--json").stdout) if r["run_id"] == run_id))
        await asyncio.sleep(1.2)
    assert [r["status"] for r in listed] == ["stale", "stale"]
    assert listed[0]["wall_seconds"] == listed[1]["wall_seconds"]  # the clock stopped with the coordinator
    # at its last sign of life: the heartbeat, or a hop recorded after it (was 0 s after dozens of hops)
    last_hop = await conn.fetchval("SELECT extract(epoch FROM max(h.finished_at) - r.started_at)::float8 FROM ctq.hops h "
                                   "JOIN ctq.runs r USING (run_id) WHERE run_id = $1 GROUP BY r.started_at", run_id)
    assert listed[0]["wall_seconds"] >= last_hop - 1e-3, (listed[0], last_hop)
    assert "stale" in run_cli("runs").stdout

    # session 3: finishes; the JSON has this session's and the whole run's totals
    proc = run_cli("train", str(grid), "--name", "nightly", "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["run_id"] == run_id and result["status"] == "succeeded" and result["exit_code"] == 0
    assert result["run_hops"] == TOTAL_HOPS and 0 < result["hops"] < TOTAL_HOPS
    assert result["run_wall_seconds"] > result["wall_seconds"]

    # reproducible: a straight run of the same grid ends with the very same weights, bit for bit
    straight = run_cli("train", str(grid), "--name", "straight", "--reproducible", "--json")
    assert straight.returncode == 0, straight.stderr
    other_id = json.loads(straight.stdout)["run_id"]
    states = {}
    for r in (run_id, other_id):
        ids = [m["model_id"] for m in await conn.fetch("SELECT model_id FROM ctq.models WHERE run_id = $1", r)]
        states[r] = {m: b"".join(a.tobytes() for a in await stored_state(conn, r, m)) for m in ids}
    assert states[run_id] == states[other_id] and all(states[run_id].values())
    assert await conn.fetchval("SELECT schedule FROM ctq.runs WHERE run_id = $1", other_id) == "mop-fixed"

    # on an 80-column terminal the leaderboard keeps rank, name and score
    screen = in_terminal(dsn, ctq_home, "models", str(other_id), columns=80)
    first = next(line for line in screen.splitlines() if line.strip().startswith("1 "))
    assert "m/adam" in first and "…" not in screen and len(first.split()[2]) == 6  # e.g. 0.8125


def in_terminal(dsn, ctq_home, *args, columns: int) -> str:
    """Run ctq with stdout on a pseudo-terminal of the given width; returns what it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home), COLUMNS=str(columns), TERM="dumb")
    proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", *args], stdout=slave, stderr=subprocess.PIPE,
                            env=env)
    os.close(slave)
    shown = read_terminal(master)
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0, proc.stderr.read()
    return shown.decode()


BAD_RESHAPE = {  # 8 inputs -> Dense(4) -> Reshape((3,)): Keras cannot build it
    "module": "keras", "class_name": "Sequential", "registered_name": None,
    "config": {"name": "bad", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 8]}},
        {"module": "keras.layers", "class_name": "Dense", "config": {"units": 4}},
        {"module": "keras.layers", "class_name": "Reshape", "config": {"target_shape": [3]}},
        {"module": "keras.layers", "class_name": "Dense", "config": {"units": 3, "activation": "softmax"}},
    ]},
}


async def test_keras_colours_stay_out_of_json_and_logs(small_table, tmp_path, run_cli):
    """Keras wraps parts of its errors in terminal bold codes; a model that cannot be built is
    refused up front (exit 2) with its reason, without them."""
    (tmp_path / "bad.json").write_text(json.dumps(BAD_RESHAPE))
    grid = write_grid(tmp_path, f"""
        name: colours
        data: {{table: {small_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
        segments: 2
        models: [{{name: bad, keras_json: bad.json}}]
        epochs: 1
    """)
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "error" and doc["exit_code"] == 2 and "bad.json" in doc["error"]
    assert "\x1b" not in proc.stdout + proc.stderr


async def test_a_reader_that_goes_away_leaves_the_run_to_finish(small_table, tmp_path, dsn, ctq_home, conn, run_cli):
    """`ctq train grid.yaml 2>&1 | head -3`: head exits after three lines, every later write finds
    the pipe closed; the run goes on to the end and exits 0 instead of dying stale with 0 hops."""
    grid = write_grid(tmp_path, f"""
        name: piped
        data: {{table: {small_table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
                task: classification}}
        segments: 2
        models: [{{name: m, layers: [{{dense: 8}}]}}]
        search: {{seed: 2, space: {{learning_rate: [0.01, 0.003]}}}}
        epochs: 2
        metric: val_accuracy
    """)
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home))
    for command in (f'"{sys.executable}" -m ctq.cli train "{grid}" 2>&1 | head -3',
                    f'"{sys.executable}" -m ctq.cli runs | head -1'):
        proc = subprocess.run(["bash", "-c", command + "; exit ${PIPESTATUS[0]}"], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(proc.stdout.splitlines()) <= 3 and "Traceback" not in proc.stdout + proc.stderr
    run = await conn.fetchrow("SELECT run_id, status FROM ctq.runs WHERE name = 'piped' ORDER BY run_id DESC LIMIT 1")
    assert run["status"] == "succeeded"
    assert await hops_of(conn, run["run_id"]) == 2 * 2 * 2


async def test_a_closed_terminal_interrupts_the_run_resumably(table, grid, dsn, ctq_home, conn, run_cli):
    """SIGHUP (the terminal closed) ends the run as 'interrupted', like Ctrl-C; its models that were
    training are listed 'interrupted', by `models` and `runs` alike, and `rm` names the same status."""
    proc = start(dsn, ctq_home, "train", str(grid), "--name", "hangup")
    run_id = await wait_for(conn, "SELECT max(run_id) FROM ctq.runs WHERE name = 'hangup' AND status = 'running'")
    await wait_for(conn, "SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
    proc.send_signal(signal.SIGHUP)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    statuses = [m["status"] for m in json.loads(run_cli("models", str(run_id), "--json").stdout)]
    assert "interrupted" in statuses and "training" not in statuses, statuses
    listed = next(r for r in json.loads(run_cli("runs", "--json").stdout) if r["run_id"] == run_id)
    assert listed["status"] == "interrupted"
    removal = run_cli("rm", str(run_id))
    assert removal.returncode == 2 and f"run {run_id} (hangup, interrupted," in removal.stderr, removal.stderr

    # the cron pattern (docs/unattended.md): --resume auto goes on with the newest run of the grid
    # while it has not succeeded, and once it has, the next night's --resume auto starts a new run
    from ctq import api
    from ctq.config import load_config

    resumed = run_cli("train", str(grid), "--name", "hangup", "--resume", "auto", "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id and json.loads(resumed.stdout)["status"] == "succeeded"
    assert await api.run_to_resume(dsn, load_config(str(grid)), "hangup") is None


@pytest.mark.parametrize("closed", ["2>&-", ">&-"])
async def test_a_command_with_stdout_or_stderr_closed_runs_as_with_a_reader_that_left(table, grid, dsn, ctq_home,
                                                                                      conn, closed):
    """Started without stderr: Python gives the command None for it, and ctq train did nothing,
    printed nothing and exited 120; without stdout, a command's end was a traceback, exit 120. It
    runs as with /dev/null there: the run succeeds, exit 0, the JSON where stdout is."""
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home))
    if closed == "2>&-":
        command = f"{sys.executable} -m ctq.cli train {grid} --name closed-err --json {closed}"
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert json.loads(proc.stdout)["status"] == "succeeded"
        assert await conn.fetchval("SELECT status FROM ctq.runs WHERE name = 'closed-err'") == "succeeded"
    else:
        proc = subprocess.run(["sh", "-c", f"{sys.executable} -m ctq.cli runs --json {closed}"], capture_output=True,
                              text=True, timeout=300, env=env)
        assert proc.returncode == 0 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr


async def test_two_resumes_of_one_run_at_once_one_drives_the_other_is_refused(table, grid, dsn, ctq_home, conn,
                                                                             run_cli):
    """Two cron jobs resume the same stale run at once: one drives it to the end; the other is
    refused, exit 2, naming the run, having changed nothing (it warmed up, then ended exit 1 as
    a 'failed' run that had not failed: a user trial)."""
    run_cli("install")
    proc = start(dsn, ctq_home, "train", str(grid), "--name", "twice", "--json")
    run_id = await wait_for(conn, "SELECT max(run_id) FROM ctq.runs WHERE name = 'twice' AND status = 'running'")
    await wait_for(conn, "SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    jobs = [start(dsn, ctq_home, "train", "--resume", str(run_id), "--json") for _ in range(2)]
    outcomes = sorted((job.wait(timeout=300), json.loads(job.stdout.read())) for job in jobs)
    (won, result), (lost, refusal) = outcomes
    assert (won, lost) == (0, 2), outcomes
    assert result["status"] == "succeeded" and result["run_hops"] == TOTAL_HOPS, result
    assert refusal["run_id"] == run_id and f"run {run_id} is still being driven" in refusal["error"], refusal
    assert await hops_of(conn, run_id) == TOTAL_HOPS


async def test_a_run_whose_source_was_dropped_says_so_when_resumed(dsn, ctq_home, conn, run_cli, tmp_path):
    """The source of a stale run dropped: its resume said 'permission denied ... ask an
    administrator to run: ctq grant ctq', to the superuser, and the grant changed nothing (a
    user trial). It says the table no longer exists, exit 2, naming the run."""
    run_cli("install")
    await create_table(conn, "public.dropped_src", 8000, seed=12)
    grid = write_grid(tmp_path, GRID.replace("public.unattended", "public.dropped_src"), "dropped.yaml")
    proc = start(dsn, ctq_home, "train", str(grid), "--name", "dropped", "--json")
    run_id = await wait_for(conn, "SELECT max(run_id) FROM ctq.runs WHERE name = 'dropped' AND status = 'running'")
    await wait_for(conn, "SELECT count(*) FROM ctq.hops WHERE run_id = $1", run_id)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    await conn.execute("DROP TABLE public.dropped_src")
    for extra in ((), ("--keep-pack",)):
        resumed = run_cli("train", "--resume", str(run_id), *extra, "--json")
        assert resumed.returncode == 2, resumed.stderr
        doc = json.loads(resumed.stdout)
        assert doc["run_id"] == run_id and "public.dropped_src" in doc["error"], doc
        assert "no longer exists" in doc["error"] and "grant" not in doc["error"], doc

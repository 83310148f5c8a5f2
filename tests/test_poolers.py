"""ctq behind a real connection pooler (pgbouncer, issue 21 point 5). ctq needs whole sessions
(per-backend caches, session advisory locks, one session per segment): a pooler that shares server
sessions between clients is named as such (exit 3, before anything is written), and a session pool
too small for the run fails within seconds instead of queueing for pgbouncer's 120 s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import server_readable_tempdir, write_grid

pytestmark = [pytest.mark.asyncio(loop_scope="session"),
              pytest.mark.skipif(not Path("/usr/sbin/pgbouncer").exists(),
                                 reason="pgbouncer is not installed (make test installs it: apt-get install pgbouncer)")]

GRID = """
    name: pooled
    data: {table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}
    segments: 2
    models: [{name: m, layers: [{dense: 4}]}]
    search: {space: {batch_size: [256]}}
    epochs: 1
    metric: val_accuracy
"""


class Bouncer:
    """A pgbouncer in front of the test server, in ``mode`` with ``pool`` server sessions, run as
    the server's OS user when the tests run as root (pgbouncer refuses root, as PostgreSQL does)."""

    PORT = 6439

    def __init__(self, cluster, mode: str, pool: int):
        self.dir = server_readable_tempdir("ctq-pgbouncer-")
        os.chmod(self.dir, 0o777)
        (self.dir / "users.txt").write_text('"ctq" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""
[databases]
ctq = host={cluster.socket_dir} port={cluster.port} dbname=ctq user=ctq
[pgbouncer]
listen_addr =
listen_port = {self.PORT}
unix_socket_dir = {self.dir}
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = {mode}
default_pool_size = {pool}
ignore_startup_parameters = statement_timeout,lock_timeout
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        self.dsn = f"postgresql://ctq@/ctq?host={self.dir}&port={self.PORT}"

    def __enter__(self):
        argv = ["/usr/sbin/pgbouncer", "-d", str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            argv = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(argv)]
        subprocess.run(argv, check=True, timeout=30)
        deadline = time.monotonic() + 10
        while not (self.dir / f".s.PGSQL.{self.PORT}").exists():
            assert time.monotonic() < deadline, (self.dir / "pgbouncer.log").read_text()
            time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        pid = int((self.dir / "pgbouncer.pid").read_text())
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while (self.dir / "pgbouncer.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


def ctq(bouncer, run_cli, *args):
    return run_cli(*args, env={"CTQ_DSN": bouncer.dsn}, timeout=180)


async def test_a_transaction_pooler_is_named_and_nothing_is_written(cluster, small_table, tmp_path, run_cli, conn):
    grid = write_grid(tmp_path, GRID)
    runs = await conn.fetchval("SELECT count(*) FROM ctq.runs") if await conn.fetchval(
        "SELECT to_regclass('ctq.runs') IS NOT NULL") else 0
    with Bouncer(cluster, "transaction", 3) as bouncer:
        proc = ctq(bouncer, run_cli, "train", str(grid), "--json")
        doctor = ctq(bouncer, run_cli, "doctor", "--json")
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert "shares server sessions between clients" in doc["error"] and "pool_mode = session" in doc["error"], doc
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert doctor.returncode != 0
    assert "shares server sessions" in doctor.stdout
    if runs:
        assert await conn.fetchval("SELECT count(*) FROM ctq.runs") == runs


async def test_a_session_pool_too_small_fails_fast_and_a_large_enough_one_trains(cluster, small_table, tmp_path,
                                                                                 run_cli):
    grid = write_grid(tmp_path, GRID)
    with Bouncer(cluster, "session", 2) as bouncer:
        started = time.monotonic()
        small = ctq(bouncer, run_cli, "train", str(grid), "--json")
        seconds = time.monotonic() - started
    assert small.returncode == 3, small.stderr
    assert "no server session free within 10 s" in json.loads(small.stdout)["error"]
    assert seconds < 60, seconds  # pgbouncer alone would queue the client for 120 s

    with Bouncer(cluster, "session", 4) as bouncer:
        trained = ctq(bouncer, run_cli, "train", str(grid), "--json")
        doctor = ctq(bouncer, run_cli, "doctor")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["status"] == "succeeded"
    assert "connection pooler" in doctor.stdout and "keeps sessions whole" in doctor.stdout, doctor.stdout

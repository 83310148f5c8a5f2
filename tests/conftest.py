"""Shared fixtures: one real embedded PostgreSQL (with plpython3u and Keras) for the session.

Nothing is mocked: tests talk to a real server through asyncpg or run the real `ctq` CLI in a
subprocess, and training runs Keras inside the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from ctq.embedded import EmbeddedCluster
from ctq.rules import PackStats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))
from make_data import make  # noqa: E402  (the demo's own generator)


def server_readable_tempdir(prefix: str) -> Path:
    """pytest's tmp_path is under a 0700 dir that the server user (as root: postgres) cannot enter."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="session")
def ctq_home():
    home = server_readable_tempdir("ctq-test-")
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(ctq_home):
    c = EmbeddedCluster(ctq_home)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def dsn(cluster) -> str:
    return cluster.dsn


@pytest.fixture
async def conn(dsn):
    c = await asyncpg.connect(dsn)
    yield c
    await c.close()


async def create_table(conn, name: str, rows: int, seed: int = 1) -> None:
    """A demo-like classification table (8 float features, 3 classes) built from make_data."""
    x, y = make(rows, seed)
    cols = ", ".join(f"f{i} float8" for i in range(1, 9))
    await conn.execute(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} ({cols}, label int)")
    schema, _, table = name.rpartition(".")
    await conn.copy_records_to_table(table, schema_name=schema or None,
                                     records=[tuple(map(float, r)) + (int(l),) for r, l in zip(x, y)])


@pytest.fixture(scope="session")
async def small_table(dsn):
    """public.small: 3,000 rows, enough to learn from in a few hops."""
    c = await asyncpg.connect(dsn)
    await create_table(c, "public.small", 3000)
    await c.close()
    return "public.small"


def read_terminal(master: int) -> bytes:
    """All a child wrote to a pseudo-terminal, read from its ``master`` end until the child closes it."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def write_grid(directory: Path, body: str, name: str = "grid.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(textwrap.dedent(body))
    return path


ONE_MODEL_ON_SMALL = """
name: {name}
data: {{table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
segments: 2
models: [{{name: m, layers: [{{dense: 8}}]}}]
search: {{space: {{batch_size: [{batch}]}}}}
epochs: {epochs}
"""  # one small model on public.small (small_table), for tests about a run rather than a model


@pytest.fixture
def run_cli(dsn, ctq_home):
    """Run the real `ctq` command in a subprocess against the session's database."""

    def run(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None):
        full_env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home), COLUMNS="200")
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "ctq.cli", *args], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=cwd)

    return run


async def ctq_cli(dsn, ctq_home, *args, timeout: float = 300):
    """The real CLI in a subprocess, without blocking this event loop (a proxy or a writer may run
    in it). Returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ctq.cli", *args, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE,
                                                env=dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home)))
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


async def stored_state(conn, run_id: int, model_id: int) -> list[np.ndarray] | None:
    """A model's stored state (its newest parts, assembled as export reads them), on the server's engine."""
    from ctq.engines import detect

    return await (await detect(conn)).read_state(conn, run_id, model_id)


def assert_close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


async def assert_states_follow_the_recorded_hops(conn, run_id: int, segments: int) -> None:
    """Each model's final weights and optimizer slots equal a plain Keras run over the segments of
    its recorded hops, in their order: a hop trained twice (or lost) for one record would not (on a
    cluster: Greenplum's or Citus' ``segments``)."""
    from test_mop_equals_sequential import model_state, segment_arrays, standalone_keras

    pack = await conn.fetchrow("SELECT p.table_name, p.stats::text AS stats FROM ctq.packs p "
                               "WHERE p.pack_id = (SELECT pack_id FROM ctq.runs WHERE run_id = $1)", run_id)
    stats = PackStats.from_dict(json.loads(pack["stats"]))
    data = {s: await segment_arrays(conn, pack["table_name"], s, stats) for s in range(segments)}
    for m in await conn.fetch("SELECT model_id, architecture::text, hyperparameters::text, seed "
                              "FROM ctq.models WHERE run_id = $1 ORDER BY model_id", run_id):
        order = [r["segment"] for r in await conn.fetch(
            "SELECT segment FROM ctq.hops WHERE run_id = $1 AND model_id = $2 ORDER BY started_at",
            run_id, m["model_id"])]
        expected = model_state(standalone_keras(json.loads(m["architecture"])["layers"],
                                                json.loads(m["hyperparameters"]), m["seed"],
                                                [data[s] for s in order], stats.n_outputs))
        actual = await stored_state(conn, run_id, m["model_id"])
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_close(a, e)


class CountingRelay:
    """A relay in front of a server that counts the bytes of every connection through it, each way:
    what ctq's client sends to (bytes_out) and receives from (bytes_in) the database. Clients reach
    it over TCP on loopback (``dsn``); it reaches the server as ``dsn`` given says (TCP, or the
    unix socket of a DSN whose host is a directory, as the embedded server's)."""

    def __init__(self, dsn: str):
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", [""])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        self.socket = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
        self.target = (host, port)
        self.user, self.database = parts.username or "", parts.path.lstrip("/")
        self.bytes_in = self.bytes_out = 0

    async def __aenter__(self):
        import asyncio

        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.dsn = f"postgresql://{self.user}@127.0.0.1:{port}/{self.database}?sslmode=disable"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        import asyncio

        if self.socket:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pump(src, dst, inbound):
            try:
                while data := await src.read(65536):
                    if inbound:
                        self.bytes_in += len(data)
                    else:
                        self.bytes_out += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

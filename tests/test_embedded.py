"""The embedded PostgreSQL cluster, against a real server (no mocks).

Needs the PostgreSQL server binaries and plpython3u (Debian: postgresql-15
postgresql-plpython3-15); skipped when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from conftest import server_readable_tempdir
from ctq import embedded
from ctq.embedded import EmbeddedCluster, resolve_dsn, server_python_path
from ctq.errors import DatabaseError

try:
    embedded._plpython_so(embedded.find_pg_bindir())
except DatabaseError as e:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server with plpython3u here: {e}", allow_module_level=True)

AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def cluster():
    home = server_readable_tempdir("ctq-emb-")
    c = EmbeddedCluster(home)
    try:
        yield c
    finally:
        try:
            c.stop()
        finally:
            shutil.rmtree(home, ignore_errors=True)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").exists():
            st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            if st in ("Z", "X"):
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not go away")


def test_status_of_a_fresh_home_creates_nothing():
    home = server_readable_tempdir("ctq-emb-status-")
    try:
        c = EmbeddedCluster(home)
        st = c.status()
        assert st["running"] is False and st["pid"] is None and st["initialized"] is False
        assert st["dsn"] == f"postgresql://ctq@/ctq?host={home}/run&port=5432"
        assert st["home"] == str(home) and st["data_dir"] == str(home / "pgdata")
        assert c.stop() is False
        assert list(home.iterdir()) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_fresh_start_connects_as_ctq(cluster):
    assert not cluster.is_running()
    dsn = cluster.start()
    assert dsn == cluster.dsn
    assert cluster.is_running()
    st = cluster.status()
    assert st["running"] and isinstance(st["pid"], int)
    assert st["version"].startswith("PostgreSQL ")
    assert st["python_path"], st
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == "ctq"
        assert await conn.fetchval("SELECT current_database()") == "ctq"
        assert await conn.fetchval("SHOW listen_addresses") == ""
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW max_connections") == "64"
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()
    sock = cluster.socket_dir.stat()
    assert stat.S_IMODE(sock.st_mode) == 0o700
    if AS_ROOT:
        assert st["server_user"] != "root"
        assert cluster.data_dir.stat().st_uid == sock.st_uid != 0


async def test_plpython_imports_keras_from_the_client_environment(cluster):
    dsn = cluster.start()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
        await conn.execute(
            """
            CREATE OR REPLACE FUNCTION ctq_probe_env() RETURNS text[] LANGUAGE plpython3u AS $$
            import os, sys, numpy, keras
            return [keras.backend.backend(), numpy.__file__, keras.__file__,
                    os.environ.get("CTQ_SERVER", ""), os.environ.get("JAX_PLATFORMS", "")]
            $$
            """
        )
        backend, numpy_file, keras_file, ctq_server, jax_platforms = await conn.fetchval(
            "SELECT ctq_probe_env()"
        )
    finally:
        await conn.close()
    assert backend == "jax"
    assert ctq_server == "1" and jax_platforms == "cpu"
    path = cluster.status()["python_path"]
    assert any(numpy_file.startswith(p + "/") for p in path), (numpy_file, path)
    assert any(keras_file.startswith(p + "/") for p in path), (keras_file, path)
    assert not numpy_file.startswith("/usr/lib/python3/dist-packages")


def test_start_is_idempotent(cluster):
    cluster.start()
    pid = cluster.status()["pid"]
    assert cluster.start() == cluster.dsn
    assert cluster.status()["pid"] == pid


async def test_stop_then_start_keeps_data(cluster):
    dsn = cluster.start()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
    finally:
        await conn.close()
    assert cluster.stop() is True
    assert not cluster.is_running()
    assert cluster.status()["running"] is False
    assert cluster.stop() is False
    assert cluster.start() == dsn
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT x FROM kept") == 7
    finally:
        await conn.close()


async def test_recovers_from_a_stale_pid_file(cluster):
    dsn = cluster.start()
    old = cluster.status()["pid"]
    os.kill(old, signal.SIGKILL)  # a crash: postmaster.pid stays behind
    _wait_gone(old)
    assert (cluster.data_dir / "postmaster.pid").exists()
    assert not cluster.is_running()
    assert cluster.start() == dsn
    new = cluster.status()["pid"]
    assert new != old and cluster.is_running()
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT x FROM kept") == 7
    finally:
        await conn.close()


def test_resolve_dsn_precedence(cluster, monkeypatch):
    monkeypatch.setenv("CTQ_HOME", str(cluster.home))
    monkeypatch.setenv("CTQ_DSN", "postgresql://env@localhost/envdb")
    assert resolve_dsn("postgresql://arg@localhost/argdb") == "postgresql://arg@localhost/argdb"
    assert resolve_dsn() == "postgresql://env@localhost/envdb"
    monkeypatch.delenv("CTQ_DSN")
    assert embedded.default_home() == cluster.home
    assert resolve_dsn(start=False) == cluster.dsn
    cluster.stop()
    assert resolve_dsn(start=False) == cluster.dsn and not cluster.is_running()
    assert resolve_dsn() == cluster.dsn
    assert cluster.is_running()


def test_default_home(monkeypatch):
    monkeypatch.delenv("CTQ_HOME", raising=False)
    if AS_ROOT:
        assert embedded.default_home() == Path("/var/lib/ctq")
    else:
        monkeypatch.setenv("XDG_DATA_HOME", "/tmp/xdg-probe")
        assert embedded.default_home() == Path("/tmp/xdg-probe/ctq")
    monkeypatch.setenv("CTQ_HOME", "/tmp/some-ctq-home")
    assert embedded.default_home() == Path("/tmp/some-ctq-home")


def test_too_long_socket_path_is_refused():
    c = EmbeddedCluster(Path("/tmp") / ("x" * 120))
    with pytest.raises(DatabaseError, match="CTQ_HOME"):
        c.start()
    assert not c.home.exists()


@pytest.mark.skipif(not AS_ROOT, reason="the server runs as the current user when not root")
def test_unreachable_home_is_refused():
    outer = Path(tempfile.mkdtemp(prefix="ctq-emb-private-", dir="/tmp"))  # 0700, root
    try:
        c = EmbeddedCluster(outer / "home")
        with pytest.raises(DatabaseError, match=r"cannot enter .*ctq-emb-private-"):
            c.start()
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def test_a_home_that_cannot_be_a_directory_names_ctq_home(tmp_path):
    """CTQ_HOME naming a file gave a bare '/x: File exists' (a user trial): the line names the fix."""
    (tmp_path / "file").write_text("")
    with pytest.raises(DatabaseError, match=r"home .*/file cannot be created \(File exists\); set CTQ_HOME"):
        EmbeddedCluster(tmp_path / "file").start()


@pytest.fixture
def hidden_site():
    """A fake site-packages under a 0700 root-only directory (like a venv under /root)."""
    outer = Path(tempfile.mkdtemp(prefix="ctq-emb-hidden-", dir="/tmp"))
    site = outer / "site-packages"
    (site / "ctqprobe_mod").mkdir(parents=True)
    (site / "ctqprobe_mod" / "__init__.py").write_text("VALUE = 42\n")
    (site / "ctqprobe_mod-1.0.dist-info").mkdir()
    (site / "ctqprobe_mod-1.0.dist-info" / "METADATA").write_text("Name: ctqprobe_mod\n")
    yield site
    shutil.rmtree(outer, ignore_errors=True)


@pytest.mark.skipif(not AS_ROOT, reason="needs an OS user other than the home's owner")
def test_another_users_home_is_named_with_the_fix_not_called_down(cluster):
    """`ctq db status` by an OS user who cannot read the home said the running server was not
    running (exit 1: a monitoring check would page); `ctq runs` said only 'Operation not
    permitted' (a user trial). Both say whose home it is and what to do, exit 3."""
    probe = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", "import ctq.cli"],
                           capture_output=True, cwd="/", env=dict(os.environ))
    if probe.returncode != 0:  # e.g. a checkout under /root: another user cannot run ctq at all
        pytest.skip("user nobody cannot import ctq from this checkout (not readable by other users)")
    cluster.start()
    env = dict(os.environ, CTQ_HOME=str(cluster.home))
    env.pop("CTQ_DSN", None)
    for args in (["db", "status", "--json"], ["runs"]):
        proc = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-m", "ctq.cli", *args],
                              capture_output=True, text=True, env=env, cwd="/", timeout=120)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert "as nobody" in proc.stderr and "Run ctq as the user that owns it" in proc.stderr, proc.stderr
        if args[0] == "db":
            assert json.loads(proc.stdout)["running"] is None


@pytest.mark.skipif(not AS_ROOT, reason="needs a server user different from the current one")
def test_mirror_is_used_when_the_server_user_cannot_read_site_packages(hidden_site):
    user = embedded.resolve_server_user()
    home = server_readable_tempdir("ctq-emb-mirror-")
    try:
        readable = server_readable_tempdir("ctq-emb-open-")
        try:
            assert server_python_path(user, home=home, sources=[readable]) == [str(readable)]
        finally:
            shutil.rmtree(readable)

        mirror = home / "python" / "site-packages"
        assert server_python_path(user, home=home, sources=[hidden_site]) == [str(mirror)]
        src_file = hidden_site / "ctqprobe_mod" / "__init__.py"
        dst_file = mirror / "ctqprobe_mod" / "__init__.py"
        assert dst_file.read_text() == "VALUE = 42\n"
        assert dst_file.stat().st_ino == src_file.stat().st_ino  # hard link, no copy
        r = subprocess.run(["runuser", "-u", user, "--", "test", "-r", str(dst_file)], cwd="/")
        assert r.returncode == 0

        # unchanged environment: the mirror is not redone
        ino = mirror.stat().st_ino
        assert server_python_path(user, home=home, sources=[hidden_site]) == [str(mirror)]
        assert mirror.stat().st_ino == ino

        # a newly installed distribution: the mirror is redone and shows it
        (hidden_site / "newpkg").mkdir()
        (hidden_site / "newpkg" / "__init__.py").write_text("")
        (hidden_site / "newpkg-2.0.dist-info").mkdir()
        assert server_python_path(user, home=home, sources=[hidden_site]) == [str(mirror)]
        assert mirror.stat().st_ino != ino
        assert (mirror / "newpkg" / "__init__.py").exists()
        assert not list((home / "python").glob(".site-packages.*"))
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not AS_ROOT, reason="needs a server user different from the current one")
async def test_server_imports_from_the_mirror(hidden_site):
    home = server_readable_tempdir("ctq-emb-mirror-srv-")
    c = EmbeddedCluster(home, python_sources=[hidden_site])
    try:
        dsn = c.start()
        assert c.status()["python_path"] == [str(home / "python" / "site-packages")]
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """
                CREATE FUNCTION probe() RETURNS text LANGUAGE plpython3u AS $$
                import ctqprobe_mod
                return "%s %s" % (ctqprobe_mod.VALUE, ctqprobe_mod.__file__)
                $$
                """
            )
            value, file = (await conn.fetchval("SELECT probe()")).split(" ", 1)
        finally:
            await conn.close()
        assert value == "42"
        assert file == str(home / "python" / "site-packages" / "ctqprobe_mod" / "__init__.py")
    finally:
        c.stop()
        shutil.rmtree(home, ignore_errors=True)

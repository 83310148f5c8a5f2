"""The embedded PostgreSQL cluster that every ctq command uses when no DSN is given.

One cluster lives in one *home* directory (``default_home()``, ``$CTQ_HOME``)::

    <home>/pgdata                 the data directory (owned by the server user, 0700)
    <home>/run                    the unix socket directory (owned by the server user, 0700)
    <home>/log/postgresql.log     the server log
    <home>/keras                  KERAS_HOME of the server processes
    <home>/python/site-packages   a hard-linked mirror of the client's site-packages, only when the
                                  server user cannot read the original (a venv under /root)
    <home>/server.json            what the last ``start()`` used (server user, python path, ...)

The server listens only on its unix socket, so several homes coexist on the same port; the DSN
names the socket directory (``postgresql://ctq@/ctq?host=<home>/run&port=5432``), which both
asyncpg and libpq understand.

PostgreSQL refuses to run as root: as root the server runs as ``$CTQ_SERVER_USER``, else
``postgres`` if that user exists, else a system user ``ctq`` created on demand. As any other user
it runs as that user. PL/Python finds Keras through ``PYTHONPATH`` in the server's environment,
set to the site-packages of the interpreter running ctq (see :func:`server_python_path`).

Nothing here imports Keras.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Iterator, Sequence

from ctq.errors import DatabaseError, UsageError

__all__ = [
    "EmbeddedCluster",
    "default_home",
    "resolve_dsn",
    "resolve_server_user",
    "server_python_path",
    "find_pg_bindir",
    "plpython_python_version",
]

log = logging.getLogger("ctq.embedded")

SUPERUSER = "ctq"
DATABASE = "ctq"
DEFAULT_PORT = 5432
START_TIMEOUT_S = 60
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CONF_NAME = "ctq.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_NAME}'"


def _pkg_hint(major: str | None = None) -> str:
    m = major or "15"
    return f"postgresql-{m} postgresql-plpython3-{m}"


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def default_home() -> Path:
    """``$CTQ_HOME`` if set; as root ``/var/lib/ctq``; else ``$XDG_DATA_HOME/ctq`` or
    ``~/.local/share/ctq``."""
    env = os.environ.get("CTQ_HOME", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/ctq")
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "ctq").absolute()


def resolve_dsn(dsn: str | None = None, *, start: bool = True) -> str:
    """The DSN to use: the explicit ``dsn``, else ``$CTQ_DSN``, else the embedded cluster at
    :func:`default_home` (started on demand when ``start`` is true)."""
    if dsn is not None and not dsn.strip():  # `--dsn "$PROD_DSN"` with the variable unset: not the embedded one
        raise UsageError("--dsn is empty (an unset variable?); give a DSN, or leave --dsn out for the embedded "
                         "database")
    if dsn:
        return _checked_port(dsn)
    env = os.environ.get("CTQ_DSN", "").strip()
    if env:
        return _checked_port(env)
    cluster = EmbeddedCluster(default_home())
    return cluster.start() if start else cluster.dsn


def _checked_port(dsn: str) -> str:
    """``dsn``, refused (DatabaseError, exit 3: a malformed DSN) when its URL names a port that is
    none: asyncpg took 99999 modulo 65536 and tried port 34463 (a user trial)."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme in ("postgresql", "postgres") and "," not in parts.netloc:  # (one host; asyncpg checks lists)
        port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise DatabaseError(f"cannot connect to the database (malformed DSN: port {port!r} is not a port, 1 to "
                                "65535); check --dsn / CTQ_DSN")
    return dsn


def _major_of(bindir: Path) -> str | None:
    m = re.search(r"/postgresql/(\d+)/bin/?$", str(bindir))
    if m:
        return m.group(1)
    out = _version_line(bindir)
    if out:
        m = re.search(r"PostgreSQL\)?\s+(\d+)", out)
        if m:
            return m.group(1)
    return None


def _has_server_binaries(d: Path) -> bool:
    return all(os.access(d / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))


def _debian_bindirs() -> list[Path]:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    found = [p / "bin" for p in root.iterdir() if p.name.isdigit() and _has_server_binaries(p / "bin")]
    return sorted(found, key=lambda p: int(p.parent.name), reverse=True)


def find_pg_bindir(data_dir: Path | None = None) -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``$CTQ_PG_BIN`` wins; else, for an existing cluster, the Debian directory of its major version;
    else ``pg_config --bindir``; else the newest ``/usr/lib/postgresql/<major>/bin``.
    """
    env = os.environ.get("CTQ_PG_BIN", "").strip()
    if env:
        d = Path(env).expanduser()
        if not _has_server_binaries(d):
            raise DatabaseError(
                f"CTQ_PG_BIN={env} does not contain the PostgreSQL server programs initdb, pg_ctl "
                "and postgres. Point it at the server's bin directory (e.g. "
                "/usr/lib/postgresql/15/bin) or unset it."
            )
        return d
    if data_dir is not None:
        with contextlib.suppress(OSError):
            major = (data_dir / "PG_VERSION").read_text().strip()
            d = Path(f"/usr/lib/postgresql/{major}/bin")
            if major and _has_server_binaries(d):
                return d
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=20, check=True
            ).stdout.strip()
            if out and _has_server_binaries(Path(out)):
                return Path(out)
    cands = _debian_bindirs()
    if cands:
        return cands[0]
    raise DatabaseError(
        "PostgreSQL server programs (initdb, pg_ctl, postgres) were not found. Install them, e.g. "
        f"`sudo apt-get install {_pkg_hint()}`, or set CTQ_PG_BIN to the server's bin directory, "
        "or give a DSN (--dsn / CTQ_DSN) of an existing PostgreSQL with plpython3u."
    )


def _pkglibdir(bindir: Path) -> Path:
    pg_config = bindir / "pg_config"
    if os.access(pg_config, os.X_OK):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [str(pg_config), "--pkglibdir"], capture_output=True, text=True, timeout=20, check=True
            ).stdout.strip()
            if out:
                return Path(out)
    return (bindir.parent / "lib").resolve()


def _plpython_so(bindir: Path) -> Path:
    cands = [_pkglibdir(bindir) / "plpython3.so", (bindir.parent / "lib" / "plpython3.so")]
    for c in cands:
        if c.is_file():
            return c
    major = _major_of(bindir)
    raise DatabaseError(
        f"PL/Python (plpython3u) is not installed for the PostgreSQL in {bindir} (no plpython3.so "
        f"in {cands[0].parent}). Install it, e.g. `sudo apt-get install "
        f"postgresql-plpython3-{major or '15'}`."
    )


def plpython_python_version(bindir: Path | None = None) -> str | None:
    """The ``X.Y`` of the libpython that plpython3u embeds (``None`` if it cannot be told)."""
    try:
        so = _plpython_so(bindir or find_pg_bindir())
        data = so.read_bytes()
    except (DatabaseError, OSError):
        return None
    m = re.search(rb"libpython(3\.\d+)", data)
    return m.group(1).decode() if m else None


_VERSION_CACHE: dict[str, str | None] = {}


def _version_line(bindir: Path) -> str | None:
    key = str(bindir)
    if key not in _VERSION_CACHE:
        try:
            out = subprocess.run(
                [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=20
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        _VERSION_CACHE[key] = out.replace("postgres (PostgreSQL)", "PostgreSQL") if out else None
    return _VERSION_CACHE[key]


# --------------------------------------------------------------------------------------------
# Users and permissions
# --------------------------------------------------------------------------------------------


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def resolve_server_user(*, create: bool = True) -> str:
    """The OS user the server runs as (see the module docstring). As root, may create the system
    user ``ctq`` when ``create`` is true and neither ``$CTQ_SERVER_USER`` nor ``postgres`` applies."""
    env = os.environ.get("CTQ_SERVER_USER", "").strip()
    if os.geteuid() != 0:
        me = _current_user()
        if env and env != me:
            raise DatabaseError(
                f"CTQ_SERVER_USER={env}, but ctq runs as {me} and can only start the embedded "
                f"server as itself (or as any user when run as root). Unset CTQ_SERVER_USER."
            )
        return me
    if env:
        try:
            pw = pwd.getpwnam(env)
        except KeyError:
            raise DatabaseError(
                f"CTQ_SERVER_USER={env}: no such user. Create it (`useradd --system "
                f"--no-create-home {env}`) or unset CTQ_SERVER_USER."
            ) from None
        if pw.pw_uid == 0:
            raise DatabaseError(
                f"CTQ_SERVER_USER={env} is root; PostgreSQL refuses to run as root. Name an "
                "unprivileged user or unset CTQ_SERVER_USER."
            )
        return env
    for name in ("postgres", "ctq"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    if not create:
        return "ctq"
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        r = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group", "--shell",
             "/usr/sbin/nologin", "--comment", "ctq embedded PostgreSQL", "ctq"],
            capture_output=True, text=True, timeout=60,
        )
    except OSError as e:
        r = None
        err = str(e)
    else:
        err = (r.stderr or r.stdout).strip()
    if r is None or (r.returncode != 0 and r.returncode != 9):  # 9: already exists (a race)
        raise DatabaseError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as; "
            f"creating the system user 'ctq' failed: {err}. Create an unprivileged user and set "
            "CTQ_SERVER_USER to it."
        )
    return "ctq"


def _ids(user: str) -> tuple[int, int, list[int]]:
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid, os.getgrouplist(user, pw.pw_gid)


def _needs_switch(user: str | None) -> bool:
    return user is not None and os.geteuid() == 0 and user != _current_user()


def _run(
    argv: Sequence[str | os.PathLike],
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a program, as ``user`` when we are root; captures text output; never raises on rc."""
    kw: dict = {}
    if _needs_switch(user):
        uid, gid, groups = _ids(user)  # type: ignore[arg-type]
        kw.update(user=uid, group=gid, extra_groups=groups)
    try:
        return subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, env=env,
            cwd=str(cwd) if cwd else None, timeout=timeout, input=input, **kw,
        )
    except subprocess.TimeoutExpired as e:
        raise DatabaseError(f"{Path(str(argv[0])).name} did not finish within {timeout:.0f} s") from e
    except OSError as e:
        raise DatabaseError(f"cannot run {argv[0]}: {e}") from e


def _stat_allows(path: Path, uid: int, gids: Sequence[int], bits: int) -> bool:
    """Classic permission-bit check of ``bits`` (a combination of 4=r, 2=w, 1=x) for a user."""
    try:
        st = path.stat()
    except OSError:
        return False
    if uid == 0:
        return True
    if st.st_uid == uid:
        mode = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        mode = (st.st_mode >> 3) & 7
    else:
        mode = st.st_mode & 7
    return mode & bits == bits


def _unreachable_component(path: Path, user: str) -> Path | None:
    """The first directory on ``path`` that ``user`` cannot enter (``None`` if all can be)."""
    try:
        uid, _gid, gids = _ids(user)
    except KeyError:
        return None
    p = Path("/")
    for part in path.parts[1:]:
        p = p / part
        if p.exists() and not _stat_allows(p, uid, gids, 1):
            return p
    return None


def _can_read(user: str | None, target: Path, dirs: Sequence[Path] = ()) -> bool:
    """Can ``user`` read ``target`` and enter every directory of ``dirs``? Checked as that user
    when we are root (so ACLs and groups count), by permission bits otherwise."""
    if user is None or user == _current_user():
        return os.access(target, os.R_OK) and all(os.access(d, os.R_OK | os.X_OK) for d in dirs)
    if os.geteuid() == 0:
        argv = ["test", "-r", str(target)]
        for d in dirs:
            argv += ["-a", "-x", str(d), "-a", "-r", str(d)]
        return _run(argv, user=user, cwd=Path("/"), timeout=30).returncode == 0
    try:
        uid, _gid, gids = _ids(user)
    except KeyError:
        return False
    if _unreachable_component(target.parent, user) is not None:
        return False
    return _stat_allows(target, uid, gids, 4) and all(_stat_allows(d, uid, gids, 5) for d in dirs)


# --------------------------------------------------------------------------------------------
# The Python environment of the server
# --------------------------------------------------------------------------------------------


def _interpreter_site_dirs() -> list[Path]:
    out: list[Path] = []
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p and Path(p).is_dir() and Path(p) not in out:
            out.append(Path(p))
    return out


def _env_stamp(src: Path) -> str:
    """Changes when packages are added, removed or upgraded in ``src`` (not for ctq itself, whose
    editable/normal install the server never imports)."""
    try:
        names = sorted(
            n for n in os.listdir(src)
            if n.endswith((".dist-info", ".egg-info")) and not re.match(r"ctq[-_.]", n)
        )
    except OSError:
        names = []
    h = hashlib.sha256(str(src.resolve()).encode())
    for n in names:
        h.update(b"\n" + n.encode())
    return h.hexdigest()


def _make_readable(tree: Path, user: str | None) -> None:
    """Make every directory of the mirror enterable/listable, and every file readable, by
    ``user``. Directories are new (cp -al only links files); a linked file that is not
    world-readable is replaced by a private copy so the original's mode is not touched."""
    for dirpath, dirnames, filenames in os.walk(tree):
        d = Path(dirpath)
        with contextlib.suppress(OSError):
            m = d.lstat().st_mode
            if m & 0o055 != 0o055:
                os.chmod(d, stat.S_IMODE(m) | 0o755)
        for name in filenames:
            f = d / name
            try:
                st = f.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o004:
                continue
            tmp = f.with_name(f".{name}.ctqcopy")
            shutil.copy2(f, tmp)
            os.chmod(tmp, stat.S_IMODE(st.st_mode) | 0o444)
            os.replace(tmp, f)


def _mirror(src: Path, dest: Path, user: str | None) -> None:
    stamp_file = dest.with_name(dest.name + ".stamp")
    stamp = _env_stamp(src)
    with contextlib.suppress(OSError):
        if dest.is_dir() and stamp_file.read_text().strip() == stamp:
            return
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(dest.parent, 0o755)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("mirroring %s into %s for the database server", src, dest)
    r = _run(["cp", "-a", "-l", str(src), str(tmp)], timeout=1800)
    if r.returncode != 0:  # e.g. another filesystem: hard links are impossible, copy for real
        shutil.rmtree(tmp, ignore_errors=True)
        r = _run(["cp", "-a", str(src), str(tmp)], timeout=3600)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatabaseError(
                f"cannot copy the Python environment {src} to {dest} for the database server: "
                f"{r.stderr.strip()}. Free some disk space, or set CTQ_HOME to a directory on the "
                "same filesystem, or install ctq in a virtual environment the server user can read."
            )
    _make_readable(tmp, user)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    stamp_file.write_text(stamp + "\n")
    os.chmod(stamp_file, 0o644)


def server_python_path(
    server_user: str | None,
    *,
    home: Path | None = None,
    sources: Sequence[str | os.PathLike] | None = None,
) -> list[str]:
    """The directories to put on the server's ``PYTHONPATH``: the site-packages of the current
    interpreter (``sysconfig`` purelib/platlib, or ``sources``), each one used in place when
    ``server_user`` can read it, else mirrored with hard links into ``<home>/python/`` (redone
    only when the installed distributions change)."""
    srcs: list[Path] = []
    for s in (sources if sources is not None else _interpreter_site_dirs()):
        p = Path(s).absolute()
        if p.is_dir() and p not in srcs:
            srcs.append(p)
    home = Path(home) if home is not None else default_home()
    out: list[str] = []
    for i, src in enumerate(srcs):
        probe = src / "numpy" / "__init__.py"
        if _can_read(server_user, probe if probe.exists() else src, [src]):
            out.append(str(src))
            continue
        dest = home / "python" / ("site-packages" if i == 0 else f"site-packages-{i}")
        _mirror(src, dest, server_user)
        if not _can_read(server_user, dest, [dest]):
            bad = _unreachable_component(dest, server_user) if server_user else None
            raise DatabaseError(
                f"the database server user {server_user} cannot read the mirrored Python "
                f"environment {dest}" + (f" ({bad} is not enterable)" if bad else "")
                + ". Set CTQ_HOME to a directory that user can reach."
            )
        out.append(str(dest))
    return out


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _pid_is_postgres(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True
    try:
        statline = (proc / "stat").read_text()
        comm = (proc / "comm").read_text().strip()
    except OSError:
        return False
    state = statline.rsplit(")", 1)[-1].split()[0] if ")" in statline else "?"
    if state in ("Z", "X"):
        return False
    return comm.startswith(("postgres", "postmaster"))


def _shm_in_use(shmid: int) -> bool:
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        f = line.split()
        if len(f) > 6 and f[1] == str(shmid):
            return int(f[6]) > 0
    return False


class EmbeddedCluster:
    """A PostgreSQL cluster private to ctq, in ``home`` (see the module docstring)."""

    def __init__(self, home: Path | str | None = None, *, port: int = DEFAULT_PORT,
                 python_sources: Sequence[str | os.PathLike] | None = None):
        self.home = Path(home).expanduser().absolute() if home is not None else default_home()
        self.port = int(port)
        self.data_dir = self.home / "pgdata"
        self.socket_dir = self.home / "run"
        self.log_file = self.home / "log" / "postgresql.log"
        self.keras_home = self.home / "keras"
        self.state_file = self.home / "server.json"
        self.python_sources = list(python_sources) if python_sources is not None else None

    def __repr__(self) -> str:
        return f"EmbeddedCluster({str(self.home)!r}, port={self.port})"

    # ---------------------------------------------------------------- public
    @property
    def dsn(self) -> str:
        host = urllib.parse.quote(str(self.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={host}&port={self.port}"

    @property
    def initialized(self) -> bool:
        try:
            return (self.data_dir / "PG_VERSION").is_file()
        except PermissionError:
            return True

    def is_running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and _pid_is_postgres(pid)

    def start(self) -> str:
        """Initialise (once) and start the server unless it runs; wait until it accepts
        connections; make sure database ``ctq`` with plpython3u exists. Returns the DSN."""
        self._check_socket_path()
        bindir = find_pg_bindir(self.data_dir)
        _plpython_so(bindir)
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file there, a directory ctq may not write in
            raise DatabaseError(f"the embedded database's home {self.home} cannot be created ({exc.strerror}); set "
                                "CTQ_HOME to a directory ctq can create and write, or give --dsn") from None
        try:
            return self._start(bindir)
        except PermissionError as exc:  # another user's home (ctq runs as a user who does not own it)
            raise self._not_yours(exc) from None

    def _not_yours(self, exc: OSError) -> DatabaseError:
        return DatabaseError(f"cannot use {exc.filename or self.home} as {_current_user()}: {exc.strerror}. Run ctq as "
                             "the user that owns it (or as root), or set CTQ_HOME to your own directory.")

    def _start(self, bindir: Path) -> str:
        with self._lock():
            user = resolve_server_user(create=True)
            self._prepare_dirs(user)
            fresh = False
            if not self.initialized:
                self._initdb(bindir, user)
                fresh = True
            self._check_owner(user)
            if self.is_running():
                self._wait_ready(bindir)
                self._ensure_database(bindir)
                return self.dsn
            self._clear_stale()
            self._write_conf(user)
            python_path = server_python_path(user, home=self.home, sources=self.python_sources)
            self._check_python_compat(bindir)
            env = self._server_env(bindir, python_path)
            r = _run(
                [bindir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w",
                 "-t", str(START_TIMEOUT_S), "start"],
                user=user, env=env, cwd=self.home, timeout=START_TIMEOUT_S + 30,
            )
            if r.returncode != 0 or not self.is_running():
                raise DatabaseError(
                    f"the embedded PostgreSQL in {self.data_dir} did not start"
                    f"{' after initdb' if fresh else ''}.\n{(r.stdout + r.stderr).strip()}\n"
                    f"Last lines of {self.log_file}:\n{self._log_tail()}\n"
                    "Fix the cause shown above, or run `ctq db stop`, or remove "
                    f"{self.home} to start from scratch."
                )
            self._wait_ready(bindir)
            self._ensure_database(bindir)
            self._write_state(user, bindir, python_path)
            return self.dsn

    def stop(self) -> bool:
        """Stop the server (``-m fast``). True if it was running."""
        if not self.home.exists() or not self.initialized:
            return False
        with self._lock():
            if not self.is_running():
                self._clear_stale()
                return False
            bindir = find_pg_bindir(self.data_dir)
            user = self._owner_name() or resolve_server_user(create=False)
            r = _run(
                [bindir / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w",
                 "-t", str(START_TIMEOUT_S), "stop"],
                user=user, env=self._base_env(bindir), cwd=self.home,
                timeout=START_TIMEOUT_S + 30,
            )
            if r.returncode != 0 and self.is_running():
                raise DatabaseError(
                    f"the embedded PostgreSQL in {self.data_dir} did not stop.\n"
                    f"{(r.stdout + r.stderr).strip()}\nLast lines of {self.log_file}:\n"
                    f"{self._log_tail()}\nIf it hangs, stop it with `kill -INT "
                    f"{self._postmaster_pid()}`."
                )
            return True

    def status(self) -> dict:
        """A description of the cluster; starts nothing, creates nothing."""
        state: dict = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(self.state_file.read_text())
        running: bool | None = False
        pid = problem = None
        try:
            running = self.is_running()
            pid = self._postmaster_pid() if running else None
        except DatabaseError as exc:  # another user's home: whether it runs cannot be told from here
            running, problem = None, str(exc)
        except OSError:
            pass
        try:
            bindir: Path | None = find_pg_bindir(self.data_dir)
        except DatabaseError:
            bindir = None
        try:
            server_user = state.get("server_user") or self._owner_name() or resolve_server_user(create=False)
        except DatabaseError:
            server_user = None
        return {
            "home": str(self.home),
            "data_dir": str(self.data_dir),
            "initialized": self.initialized,
            "running": running,  # None: cannot be told (``problem`` says why)
            "pid": pid,
            "problem": problem,
            "dsn": self.dsn,
            "port": self.port,
            "socket_dir": str(self.socket_dir),
            "log_file": str(self.log_file),
            "server_user": server_user,
            "version": _version_line(bindir) if bindir else None,
            "bindir": str(bindir) if bindir else None,
            "python_path": state.get("python_path", []),
            "plpython_python": plpython_python_version(bindir) if bindir else None,
        }

    # ---------------------------------------------------------------- internals
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        path = self.home / ".lock"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                yield
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _check_socket_path(self) -> None:
        sock = f"{self.socket_dir}/.s.PGSQL.{self.port}"
        if len(sock.encode()) > _SUN_PATH_MAX:
            raise DatabaseError(
                f"the socket path {sock} is longer than the {_SUN_PATH_MAX} bytes a unix socket "
                "allows. Set CTQ_HOME to a shorter directory (e.g. /var/lib/ctq or ~/.ctq)."
            )

    def _prepare_dirs(self, user: str) -> None:
        as_root = os.geteuid() == 0
        uid = gid = -1
        if as_root:
            uid, gid, _ = _ids(user)
            st = self.home.stat()
            if st.st_uid == 0 and stat.S_IMODE(st.st_mode) & 0o055 != 0o055:
                os.chmod(self.home, stat.S_IMODE(st.st_mode) | 0o755)
            bad = _unreachable_component(self.home, user)
            if bad is None and not _can_read(user, self.home, [self.home]):
                bad = self.home
            if bad is not None:
                raise DatabaseError(
                    f"the embedded PostgreSQL runs as user '{user}', which cannot enter {bad} "
                    f"(mode {stat.S_IMODE(bad.stat().st_mode):04o}), so it cannot use "
                    f"CTQ_HOME={self.home}. Set CTQ_HOME to a directory it can reach (the default "
                    f"for root is /var/lib/ctq), or `chmod o+x {bad}`."
                )
        for d, mode in ((self.data_dir, 0o700), (self.socket_dir, 0o700),
                        (self.log_file.parent, 0o750), (self.keras_home, 0o700)):
            created = not d.exists()
            if created:
                d.mkdir(mode=mode)
            if as_root:
                st = d.stat()
                if st.st_uid != uid and (created or d != self.data_dir):
                    os.chown(d, uid, gid)
            if created or d == self.socket_dir:
                os.chmod(d, mode)

    def _owner_name(self) -> str | None:
        try:
            uid = self.data_dir.stat().st_uid
            return pwd.getpwuid(uid).pw_name
        except (OSError, KeyError):
            return None

    def _check_owner(self, user: str) -> None:
        owner = self._owner_name()
        if owner is not None and owner != user:
            raise DatabaseError(
                f"the data directory {self.data_dir} belongs to user '{owner}', but the server "
                f"would run as '{user}'. Set CTQ_SERVER_USER={owner} (as root), run ctq as "
                f"'{owner}', or `chown -R {user} {self.data_dir}`."
            )

    def _base_env(self, bindir: Path) -> dict[str, str]:
        env = {"PATH": f"{bindir}:{_SAFE_PATH}", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        for k in ("TZ",):
            if k in os.environ:
                env[k] = os.environ[k]
        return env

    def _server_env(self, bindir: Path, python_path: list[str]) -> dict[str, str]:
        env = self._base_env(bindir)
        env.update(
            PYTHONPATH=os.pathsep.join(python_path),
            PYTHONNOUSERSITE="1",
            KERAS_BACKEND="jax",
            KERAS_HOME=str(self.keras_home),
            JAX_PLATFORMS="cpu",
            TF_CPP_MIN_LOG_LEVEL="3",
            XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
            CTQ_SERVER="1",
            HOME=str(self.keras_home),
        )
        return env

    def _initdb(self, bindir: Path, user: str) -> None:
        if any(self.data_dir.iterdir()):
            raise DatabaseError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): "
                "probably an interrupted initialisation. Remove that directory and try again."
            )
        log.info("initialising the embedded PostgreSQL in %s", self.data_dir)
        last = None
        for locale in ("C.UTF-8", "C"):
            last = _run(
                [bindir / "initdb", "-D", self.data_dir, "-U", SUPERUSER, "--auth=trust",
                 "-E", "UTF8", f"--locale={locale}", "--no-instructions"],
                user=user, env=self._base_env(bindir), cwd=self.home, timeout=300,
            )
            if last.returncode == 0:
                return
            if "locale" not in (last.stderr + last.stdout).lower():
                break
            with contextlib.suppress(OSError):  # initdb cleans up, but leave an empty dir
                for p in self.data_dir.iterdir():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        assert last is not None
        raise DatabaseError(
            f"initdb of the embedded PostgreSQL in {self.data_dir} failed:\n"
            f"{(last.stdout + last.stderr).strip()}\nFix the cause, remove {self.data_dir} and "
            "try again."
        )

    def _write_conf(self, user: str) -> None:
        sock = str(self.socket_dir).replace("'", "''")
        conf = (
            "# Written by ctq at every start of the embedded server; do not edit.\n"
            "# Override with ALTER SYSTEM (postgresql.auto.conf), which is read after this file.\n"
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{sock}'\n"
            f"port = {self.port}\n"
            "max_connections = 64\n"
            "shared_buffers = '128MB'\n"
            "fsync = on\n"
            "logging_collector = off\n"
            "log_min_messages = warning\n"
            "log_line_prefix = '%m [%p] %q%u@%d '\n"
        )
        path = self.data_dir / _CONF_NAME
        path.write_text(conf)
        main = self.data_dir / "postgresql.conf"
        text = main.read_text()
        if _INCLUDE_LINE not in text:
            with main.open("a") as f:
                f.write(f"\n# Settings of the ctq embedded server\n{_INCLUDE_LINE}\n")
        if os.geteuid() == 0:
            uid, gid, _ = _ids(user)
            os.chown(path, uid, gid)
        os.chmod(path, 0o600)

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise self._not_yours(e) from None
        except OSError:
            return None
        try:
            return abs(int(first))
        except ValueError:
            return None

    def _clear_stale(self) -> None:
        """Remove postmaster.pid / the socket lock left by a server that is gone (a crash, a
        kill -9, a reboot), waiting for its orphaned children to release shared memory."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return
        with contextlib.suppress(ValueError, IndexError):
            pid = abs(int(lines[0]))
            if _pid_is_postgres(pid):
                return
        log.warning("removing the stale %s left by a server that is gone", pidfile)
        shmid = None
        with contextlib.suppress(ValueError, IndexError):
            shmid = int(lines[6].split()[1])
        if shmid is not None:
            deadline = time.monotonic() + 15
            while _shm_in_use(shmid) and time.monotonic() < deadline:
                time.sleep(0.1)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.socket_dir / f".s.PGSQL.{self.port}.lock").unlink()

    def _wait_ready(self, bindir: Path) -> None:
        isready = bindir / "pg_isready"
        if not os.access(isready, os.X_OK):
            return
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            r = _run([isready, "-q", "-h", self.socket_dir, "-p", str(self.port), "-d", "postgres",
                      "-U", SUPERUSER], env=self._base_env(bindir), cwd=Path("/"), timeout=30)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline or not self.is_running():
                raise DatabaseError(
                    f"the embedded PostgreSQL in {self.data_dir} does not accept connections on "
                    f"{self.socket_dir}.\nLast lines of {self.log_file}:\n{self._log_tail()}\n"
                    "Try `ctq db stop` and run the command again."
                )
            time.sleep(0.1)

    def _psql(self, bindir: Path, db: str, sql: str) -> str:
        r = _run(
            [bindir / "psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h",
             self.socket_dir, "-p", str(self.port), "-U", SUPERUSER, "-d", db, "-c", sql],
            env=self._base_env(bindir), cwd=Path("/"), timeout=120,
        )
        if r.returncode != 0:
            raise DatabaseError(
                f"setting up the embedded PostgreSQL ({sql!r}) failed: {r.stderr.strip()}"
                + (f"\nInstall PL/Python: `sudo apt-get install postgresql-plpython3-"
                   f"{_major_of(bindir) or '15'}`." if "plpython" in r.stderr else "")
            )
        return r.stdout.strip()

    def _ensure_database(self, bindir: Path) -> None:
        if not self._psql(bindir, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
            self._psql(bindir, "postgres", f"CREATE DATABASE {DATABASE}")
            self._psql(bindir, DATABASE, "CREATE EXTENSION IF NOT EXISTS plpython3u")
            # The superuser is called ctq and so is ctq's schema: with the default search_path
            # ("$user", public) a plain CREATE TABLE would land in schema ctq. Keep users in public.
            self._psql(bindir, "postgres", f"ALTER DATABASE {DATABASE} SET search_path = public")

    def _check_python_compat(self, bindir: Path) -> None:
        ver = plpython_python_version(bindir)
        mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if ver and ver != mine:
            warnings.warn(
                f"plpython3u embeds Python {ver}, but ctq runs on Python {mine}: compiled "
                f"packages (numpy, jaxlib) installed for {mine} will not load inside the database. "
                f"Install ctq with Python {ver} (e.g. `python{ver} -m venv`).",
                RuntimeWarning, stacklevel=3,
            )

    def _write_state(self, user: str, bindir: Path, python_path: list[str]) -> None:
        state = {
            "server_user": user,
            "bindir": str(bindir),
            "python_path": python_path,
            "pid": self._postmaster_pid(),
            "started_at": time.time(),
        }
        tmp = self.state_file.with_name(f".server.json.{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.state_file)

    def _log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(cannot read the log: {e})"
        return "\n".join(lines[-n:]) or "(the log is empty)"


"""`ctq doctor`: check each layer the training depends on, and say how to fix what is broken.

It only reads: a diagnosis must not change the database it diagnoses (no install, no upgrade),
so it is safe against a production server and as a pre-flight step in a script. (On Greenplum
before any pack exists, the plan of a training query is shown on a probe pack table created in a
transaction that is rolled back.)

Layers, in order (a failure stops the checks that depend on it): reaching the database, the
server version and engine, PL/Python, ctq's schema, Keras and its backend imported *inside the
server*, and the cores the segments will share.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import asyncpg

from ctq import catalog
from ctq.connection import POOL_WAIT_SECONDS, connect as open_connection
from ctq.engines import detect
from ctq.sql import install_fingerprint, template


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def client_versions() -> dict[str, str]:
    """The versions of what the client's side of ctq computes with: a model trained by the server's
    Keras is exported, and its state read, by the client's."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("keras", "jax", "numpy", "ml_dtypes"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "-"
    return out


def version_check(where: str, probes: list[dict]) -> Check:
    """The server's (every segment's) keras, jax and numpy against the client's: a mismatch fails."""
    client = client_versions()
    found = {"keras": {p["keras"] for p in probes}, "jax": {p["backend_version"] for p in probes if p["backend"] == "jax"},
             "numpy": {p["numpy"] for p in probes}}
    wrong = {k: sorted(v) for k, v in found.items() if v and v != {client[k]}}
    # ml_dtypes is not compared (it computes nothing a state depends on) but pinned with the rest: a
    # newer one is slower to import in every backend (pyproject.toml)
    pins = " ".join(f"{k}=={client[k]}" for k in ("keras", "numpy", "ml_dtypes")) + f" 'jax[cpu]=={client['jax']}'"
    return Check("versions", not wrong,
                 f"{where} and client: keras {client['keras']}, jax {client['jax']}, numpy {client['numpy']}" if not wrong
                 else f"{where}: " + ", ".join(f"{k} {', '.join(v)}" for k, v in wrong.items())
                 + f"; client: {', '.join(f'{k} {client[k]}' for k in wrong)}",
                 f"install the client's versions for the server (on every host): pip install {pins}")


async def run_checks(dsn: str | None) -> list[Check]:
    from ctq.api import default_segments
    from ctq.embedded import resolve_dsn
    from ctq.errors import CtqError

    checks: list[Check] = []
    try:
        dsn = resolve_dsn(dsn)
        conn = await open_connection(dsn, "ctq doctor")
    except (CtqError, OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return [Check("database", False, str(exc),
                      "check --dsn / CTQ_DSN, or run `ctq db start` for the embedded database")]
    try:
        info = dict(await conn.fetchrow(template("server_info.sql")))
        engine = await detect(conn)
        checks.append(Check("database", True, f"{engine.title}: {info['version'].split(',')[0]}; user {info['user_name']}"))
        checks.append(Check(
            "plpython3u", info["plpython_available"],
            "installed" if info["plpython_installed"] else ("available" if info["plpython_available"] else "missing"),
            "install the server package for PL/Python (Debian: postgresql-plpython3-15) and restart the server",
        ))
        if not info["plpython_available"]:
            return checks
        try:
            sha = await catalog.installed_sha(conn)
        except asyncpg.exceptions.InsufficientPrivilegeError:  # ctq's schema is there, but not for this role
            checks.append(Check("access", False, f"role {info['user_name']} may not use ctq's schema (not a member "
                                f"of {catalog.USER_ROLE}): the checks that follow need it",
                                f"ask an administrator to run: ctq grant {info['user_name']}"))
            return checks
        current = install_fingerprint(engine.name)
        if sha is None:
            who = "" if info["superuser"] else " as a superuser (you are not one)"
            checks.append(Check("ctq schema", False, "not installed",
                                f"run `ctq install`{who}; `ctq train` also installs it when run by a superuser"))
            return checks
        generation = await conn.fetchval(template("catalog_generation.sql"))
        if generation > catalog.CATALOG_GENERATION:
            checks.append(Check("ctq schema", False, f"installed by a newer ctq (catalog generation {generation}; "
                                f"this ctq's is {catalog.CATALOG_GENERATION})", "use that version or a later one"))
        elif sha != current:
            who = "" if info["superuser"] else ", run by a superuser (you are not one)"
            checks.append(Check("ctq schema", True,
                                f"installed, server code {sha[:12]}, another version's (this ctq: {current[:12]}); "
                                f"`ctq install` or the next `ctq train`{who} upgrades it"))
        else:
            checks.append(Check("ctq schema", True, f"installed, server code {sha[:12]}"))
        try:
            probe = json.loads(await conn.fetchval(template("probe.sql")))
        except asyncpg.PostgresError as exc:
            checks.append(Check("keras in server", False, exc.message.splitlines()[0],
                                "the server's Python cannot import keras/jax: install them where the server "
                                "can read them and run `ctq install --python-path <site-packages>` "
                                "(the embedded database does this by itself)"))
            return checks
        checks.append(Check("keras in server", True,
                            f"keras {probe['keras']}, backend {probe['backend']} {probe['backend_version']}, "
                            f"numpy {probe['numpy']}, python {probe['python']} "
                            f"(import {probe['keras_import_seconds']}s)"))
        checks.append(Check(
            "compile cache", True,
            f"compiled programs kept in {probe['compile_cache']} ({probe['compile_cache_bytes'] / 2**20:.1f} MiB)"
            if probe.get("compile_cache") else
            "none: the server's data directory is not writable; every run compiles its models afresh"))
        checks.extend(await engine.doctor_checks(conn, probe))  # (versions where the server trains, ...)
        cpus = probe["cpu_count"] or 1
        segments = (await engine.segments(conn, None, default_segments()))[0]
        checks.append(Check(
            "cores", True,
            f"server has {cpus} cores; default {segments} segments x {max(1, cpus // segments)} core(s); "
            f"client has {os.cpu_count()} cores",
        ))
        need = segments + 2
        checks.append(Check(
            "connections", info["max_connections"] >= need,
            f"max_connections {info['max_connections']} (a run uses segments + 2)",
            f"raise max_connections to at least {need}",
        ))
        if conn.get_server_pid() != await conn.fetchval(template("backend_pid.sql")):  # (connect checked its mode)
            checks.append(Check(
                "connection pooler", True,
                f"connections pass through a pooler that keeps sessions whole; its pool must hold {need} sessions "
                "at once for a run with the default segments (a full pool fails a run within "
                f"{POOL_WAIT_SECONDS} s)"))
    finally:
        await conn.close()
    return checks

"""The ``ctq`` schema: installing it and reading/writing runs, models and hops.

Everything ctq knows about a run lives in the database (governance): the configuration, every
hop of the MOP schedule, per-epoch metrics and each model's checkpointed state.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import asyncpg

from ctq import __version__
from ctq.config import fingerprint
from ctq.engines import detect
from ctq.errors import DatabaseError, NotFound, PermissionDenied, UsageError
from ctq.rules import ModelSpec, PackStats
from ctq.sql import install_fingerprint, install_script, qualified, quote_ident, render, server_code, template

_INSTALL_LOCK = 0x637471  # "ctq": serialises concurrent `ctq install`s
# A coordinator holds the session-level advisory lock (RUN_LOCK_CLASS, run_id) while it drives a
# run: a second coordinator cannot take the run over, and a run whose lock is free while its
# status says 'running' was left by a coordinator that died (ctq runs shows it as stale).
RUN_LOCK_CLASS = 0x637472


# The catalog's generation: raised (by one) with every change of install.sql that a ctq of the
# generation before could not run on (a table, column or function it lacks, data moved elsewhere).
# ctq install refuses a database of a later generation, as Alembic and Flyway refuse a schema newer
# than their migrations: an older ctq's install replaced the newer server code and ignored its
# working states (a user trial's downgrade retrained 707 hops and said a crash had lost them).
# 1: working states as files, adopted from ctq.hop_states (adopt_working_states.sql).
CATALOG_GENERATION = 1


async def installed_sha(conn: asyncpg.Connection) -> str | None:
    """The fingerprint of the installation in this database, or None if ctq is not installed."""
    if not await conn.fetchval(template("meta_exists.sql")):
        return None
    return await conn.fetchval(template("install_sha.sql"))


async def install(conn: asyncpg.Connection, python_path: list[str] | None = None) -> None:
    """Create or upgrade the schema and the in-database functions (idempotent, one transaction),
    with the SQL of the server's engine (also a repair: it recreates what is missing). Refused
    while runs are live (DatabaseError, exit 3: run it again once they end): its DDL waited on
    their hops' locks and deadlocked with them, exit 1, and would change the server code under
    them (a user trial)."""
    engine = await detect(conn)
    sources, sha = server_code()
    try:
        async with conn.transaction():
            await conn.execute(template("install_lock.sql"), _INSTALL_LOCK)
            if await installed_sha(conn) is not None:
                generation = await conn.fetchval(template("catalog_generation.sql"))
                if generation > CATALOG_GENERATION:
                    raise DatabaseError(f"ctq in this database was installed by a newer ctq (catalog generation "
                                        f"{generation}; this ctq's is {CATALOG_GENERATION}): use that version or "
                                        "a later one; a downgrade is not supported (restore a backup taken before "
                                        "the upgrade)")
                live = [r["run_id"] for r in await conn.fetch(run_sql("live_runs.sql"))]
                if live:
                    raise DatabaseError(f"run{'s' if len(live) > 1 else ''} {', '.join(map(str, live))} "
                                        f"{'are' if len(live) > 1 else 'is'} training now (a live ctq process drives "
                                        "each): this ctq installs or upgrades its server code in the database (as "
                                        "`ctq install` and the first command that needs it do) only once no run "
                                        "is live (ctq runs)")
            await conn.execute(install_script(engine.name))
            for path in python_path or ():  # checked as the server's OS user; a failure rolls back
                await _check_server_directory(conn, engine, path)
            # (delete + insert under the install lock: Greenplum 6 has no ON CONFLICT)
            await conn.execute(template("server_code_clear.sql"))
            for name, source in sources.items():
                await conn.execute(template("server_code_insert.sql"), name, sha, source)
            await conn.execute(template("adopt_working_states.sql", engine.name))
            # (what is installed is told by install_sha, the install script's fingerprint: no schema number)
            meta = {"ctq_version": __version__, "install_sha": install_fingerprint(engine.name), "engine": engine.name,
                    "catalog_generation": CATALOG_GENERATION}
            if python_path is not None:
                meta["python_path"] = python_path
            for key, value in meta.items():
                await conn.execute(template("meta_delete.sql"), key)
                await conn.execute(template("meta_insert.sql"), key, json.dumps(value))
    except asyncpg.exceptions.UndefinedFileError as exc:  # no plpython3u in this server
        raise DatabaseError(
            f"PL/Python is not available in this server ({exc}). Install the package that provides "
            "plpython3u (Debian: postgresql-plpython3-15) and run `ctq install` again."
        ) from exc
    except asyncpg.exceptions.InsufficientPrivilegeError as exc:  # a missing privilege: exit 2 (errors.py)
        who = await current_role(conn)
        raise PermissionDenied(
            f"role {who} may not install ctq ({' '.join(str(exc).split())}): plpython3u is untrusted, a superuser "
            "must run `ctq install`"
        ) from exc


async def _check_server_directory(conn, engine, path: str) -> None:
    problems = {"missing": "no such directory", "file": "is a file, not a directory",
                "unreadable": "not readable by the server's OS user",
                "world-writable": "writable by every user of that machine, who could put code there that the "
                                  "database server would run; use a directory only its owner can write"}
    for row in await conn.fetch(engine.template("path_status.sql"), path):
        if row["status"] != "ok":
            raise UsageError(f"--python-path {path}: {problems[row['status']]} on {row['place']}")


USER_ROLE, ADMIN_ROLE = "ctq_user", "ctq_admin"


async def current_role(conn: asyncpg.Connection) -> str:
    """The role this session acts as (permission errors name it, with their fix)."""
    return await conn.fetchval(template("current_role.sql"))


async def is_superuser(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(template("is_superuser.sql"))


async def role_exists(conn: asyncpg.Connection, role: str) -> bool:
    return await conn.fetchval(template("role_exists.sql"), role)


async def require_select(conn: asyncpg.Connection, rel: dict, where: str) -> None:
    """PermissionDenied, naming the GRANT that fixes it, unless this role may read ``rel`` (a
    relation as packing/scoring find it: oid, schema, name, display); ``where``: the option or key
    that named it."""
    may = await conn.fetchrow(template("has_select.sql"), rel["oid"])
    if may["schema_usage"] and may["can_select"]:
        return
    who = await current_role(conn)
    schema = rel["schema"]
    usage = f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {quote_ident(who)}"
    select = f"GRANT SELECT ON {qualified(rel['schema'], rel['name'])} TO {quote_ident(who)}"
    if may["schema_usage"]:
        lacks, grants = f"no SELECT privilege on {rel['display']}", select
    elif may["can_select"]:
        lacks, grants = f"no USAGE on schema {schema}, which holds {rel['display']}", usage
    else:  # SELECT alone fails without USAGE: one request must fix both
        lacks, grants = f"no USAGE on schema {schema} and no SELECT privilege on {rel['display']}", f"{usage}; {select}"
    raise PermissionDenied(f"role {who} has {lacks} ({where}); ask its owner or an administrator to run: {grants}")


async def check_access(conn: asyncpg.Connection) -> bool:
    """Refuse, with the fix, a role that cannot use ctq here (before anything is written); returns
    whether ctq is installed. A superuser can always (and installs on demand); others must be
    members of ctq_user (``ctq grant ROLE``), and cannot install."""
    row = await conn.fetchrow(template("access.sql"), USER_ROLE)
    if row["super"]:
        return row["installed"]
    who = row["who"]
    if not row["installed"] or not row["has_role"]:
        raise PermissionDenied(f"ctq is not installed in this database and role {who} cannot install it "
                               "(PL/Python is untrusted: a superuser installs); ask an administrator to run: "
                               f"ctq install && ctq grant {who}")
    if not await conn.fetchval(template("is_member.sql"), USER_ROLE):
        raise PermissionDenied(f"role {who} is not a member of {USER_ROLE} (no use of schema ctq); "
                               f"ask an administrator to run: ctq grant {who}")
    return True


async def is_current(conn: asyncpg.Connection, engine) -> bool:
    """Whether the database has this version of ctq installed (nothing to install or upgrade)."""
    return await installed_sha(conn) == install_fingerprint(engine.name)


async def ensure_installed(conn: asyncpg.Connection, engine) -> str | None:
    """Install or upgrade when the database does not have this version of the server code (only a
    superuser can: others are told to ask an administrator). Returns what it did, for the user (an
    upgrade by the first command after a new version's checkout went unsaid: a user trial), or None."""
    before, after = await installed_sha(conn), install_fingerprint(engine.name)
    if before == after:  # (is_current)
        return None
    if not await is_superuser(conn):
        raise PermissionDenied(("ctq is not installed in this database" if before is None else
                                "ctq's server code in this database is not this ctq's (another version "
                                "installed it)") + " and only a superuser can install it; ask an administrator "
                               "to run: ctq install")
    await install(conn)
    return (f"ctq installed in this database (server code {after[:12]})" if before is None else
            f"ctq's server code in this database upgraded to this ctq's ({before[:12]} -> {after[:12]})")


PSEUDO_ROLES = ("public", "current_user", "current_role", "session_user", "none")  # names no role can have


async def check_role(conn: asyncpg.Connection, role: str, login: bool = True) -> None:
    """UsageError naming the fix for a role name that names no role: empty, one of PostgreSQL's
    pseudo-roles (PUBLIC is everyone, not a role to grant or share with), or none that exists."""
    if not role.strip():
        raise UsageError("the role name is empty; give an existing role")
    if role.lower() in PSEUDO_ROLES:
        raise UsageError(f"{role!r} is not a role but a keyword of PostgreSQL's; give a role, e.g. a group "
                         "role its members are in (CREATE ROLE analysts; GRANT analysts TO alice)")
    if not await role_exists(conn, role):
        raise UsageError(f"no role {role!r} in this database; create it first, e.g. "
                         f"CREATE ROLE {quote_ident(role)}{' LOGIN' if login else ''}")


async def grant(conn: asyncpg.Connection, role: str, *, admin: bool = False, revoke: bool = False) -> tuple[str, bool]:
    """``ctq grant ROLE`` / ``ctq revoke ROLE``: add a role to (or remove it from) ctq_user, or
    ctq_admin with ``admin``. Returns the group role and whether the membership changed (a grant
    of a member, a revoke of a non-member: nothing to do, said so)."""
    group = ADMIN_ROLE if admin else USER_ROLE
    if await installed_sha(conn) is None:
        raise DatabaseError("ctq is not installed in this database; run `ctq install` first")
    await check_role(conn, role)
    if role in (USER_ROLE, ADMIN_ROLE):
        raise UsageError(f"{role} is one of ctq's group roles; give an analyst's role")
    if await conn.fetchval(template("role_in_group.sql"), role, group) != revoke:
        return group, False
    statement = render("revoke_role.sql" if revoke else "grant_role.sql", group=quote_ident(group), role=quote_ident(role))
    try:
        await conn.execute(statement)
    except asyncpg.exceptions.InsufficientPrivilegeError as exc:
        who = await current_role(conn)
        raise PermissionDenied(f"role {who} cannot {'revoke' if revoke else 'grant'} {group} ({exc}); "
                               "an administrator (a superuser, or a role with CREATEROLE) must run it") from exc
    return group, True


async def share(conn: asyncpg.Connection, run_id: int, roles: list[str], *, revoke: bool = False) -> list[str]:
    """``ctq share RUN_ID ROLE...``: let members of each role read the run (its models, hops,
    epochs, leaderboard and states), read-only; with ``revoke``, stop sharing with them. Only the
    run's owner or an administrator may (``ctq.can_change_run``). Returns the run's roles now.

    Raises UsageError for a role that does not exist, NotFound for a run the caller cannot see,
    PermissionDenied for a run it can see but not change."""
    for role in roles:
        await check_role(conn, role, login=False)
    run = await require_run(conn, run_id)
    if run["run_by"] in roles:  # its owner reads it anyway; recorded, it showed as a reader
        raise UsageError(f"run {run_id} is {run['run_by']}'s own: share it with other roles")
    if not run["may_change"]:
        raise PermissionDenied(f"run {run_id} belongs to {run['run_by']}: only its owner or an administrator "
                               "(ctq_admin) can share it")
    shared = await _write(conn, "share_run.sql", run_id, roles, revoke)
    return list(shared)


def run_sql(name: str) -> str:
    """A template about runs with ``{{run_alive}}`` filled: whether a live coordinator holds run
    ``r``'s lock (run_alive.sql), and ``{{run_status}}``, run ``r``'s status as shown (run_status.sql:
    'stale' when it says 'running' without one), ``{{run_status_of_lk}}`` and ``{{run_wall_seconds}}``
    (for a statement with lk.alive); one definition for every statement that asks."""
    alive = render("run_alive.sql", lock_class=RUN_LOCK_CLASS)
    return render(name, run_alive=alive, run_status=render("run_status.sql", alive=f"({alive})"),
                  run_status_of_lk=render("run_status.sql", alive="lk.alive"),
                  run_wall_seconds=render("run_wall_seconds.sql"))


async def _write(conn, name: str, *args) -> Any:
    """Run a statement that changes the catalog, the engine's way (``Engine.write``): on Greenplum
    a call of the function that checks the caller (greenplum/row_security.sql), on PostgreSQL the
    plain statement under row-level security. Returns its first value."""
    return await (await detect(conn)).write(conn, name, *args)


def _row(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(record) if record is not None else None


async def create_run(conn, *, config, pack, segments: int, schedule: str, versions: dict,
                     warm_from: dict[int, list[int]] | None = None, lock: bool = False) -> int:
    """Insert the run and one row per model in one transaction; returns the run id.
    ``warm_from``: source model id (of run ``config.warm_start``) -> the new models that start from
    its final state. ``lock``: ``conn`` also takes the run's coordinator lock in that transaction
    (a session lock: it outlives the commit) and is named its control session, so the run is
    never seen unheld, 'stale', by ctq runs, rm or a resume (a user trial removed a run in the
    seconds between its creation and its coordinator's start)."""
    async with conn.transaction():
        engine = await detect(conn)
        run_id = await engine.write(
            conn, "create_run.sql", config.name, schedule, json.dumps(config.raw), fingerprint(config),
            config.data.table, pack.pack_id, segments, config.epochs, config.metric, config.metric_mode,
            socket.gethostname(), json.dumps(versions), config.seed, config.cores_per_segment,
        )
        await conn.executemany(
            engine.render("insert_model.sql", catalog=engine.catalog),
            [
                (run_id, m.model_id, m.name, json.dumps(m.architecture.spec), json.dumps(m.hyperparameters().as_dict()),
                 m.seed)
                for m in config.models
            ],
        )
        for source, targets in (warm_from or {}).items():
            await _write(conn, "warm_start.sql", run_id, config.warm_start, targets, source)
        if lock:
            await lock_run(conn, run_id)  # a new run's: no one else can hold it yet
            await conn.execute(template("application_name.sql"), f"ctq run {run_id} control")
    return run_id


async def finish_run(conn, run_id: int, status: str, message: str | None = None) -> None:
    """Record the end of a run and close its models, in one transaction (two statements: one
    modifying CTE per query is all Greenplum allows)."""
    async with conn.transaction():
        await _write(conn, "finish_models.sql", run_id, status)
        await _write(conn, "finish_run.sql", run_id, status, message)


async def set_model_status(conn, run_id: int, model_id: int, status: str, message: str | None = None) -> None:
    await _write(conn, "model_status.sql", run_id, model_id, status, message)


async def heartbeat(conn, run_id: int) -> None:
    await _write(conn, "heartbeat.sql", run_id)


async def missing_run(conn, what: str, then: str = "") -> NotFound:
    """The error for run(s) ``what`` (an id, or ids "3, 5") that do not exist or that the caller
    cannot see, followed by ``then``. In a database without ctq it says so: a typo in the DSN's
    database name read like a missing run (a user trial)."""
    where = "" if await installed_sha(conn) is not None else \
        " (ctq is not installed in this database: is it the one you meant?)"
    return NotFound(f"no run with id {what}{where}{then}")


async def require_run(conn, run_id: int) -> dict:
    """Run ``run_id``'s row (see :func:`get_run`); NotFound (exit 2) if the caller cannot see it."""
    run = await get_run(conn, run_id)
    if run is None:
        raise await missing_run(conn, str(run_id))
    return run


async def get_run(conn, run_id: int) -> dict | None:
    if not await check_access(conn):
        return None
    return _row(await conn.fetchrow(run_sql("get_run.sql"), run_id))


async def list_runs(conn, limit: int = 50, status: str | None = None, name_like: str | None = None) -> list[dict]:
    """Runs, newest first; ``status`` ('stale' included) and ``name_like`` (a LIKE pattern) filter
    before ``limit`` applies."""
    if not await check_access(conn):
        return []
    return [dict(r) for r in await conn.fetch(run_sql("list_runs.sql"), limit, status,
                                              name_like)]


async def last_unfinished_run(conn, config_fingerprint: str) -> int | None:
    if not await check_access(conn):
        return None
    return await conn.fetchval(template("last_unfinished_run.sql"), config_fingerprint)


async def run_to_resume(conn, config_fingerprint: str) -> int | None:
    """The newest run of a configuration if its work is not done (last_run.sql), else None."""
    if not await check_access(conn):
        return None
    row = await conn.fetchrow(template("last_run.sql"), config_fingerprint)
    return row["run_id"] if row is not None and row["unfinished"] else None


async def run_models(conn, run_id: int) -> list[dict]:
    return [dict(r) for r in await conn.fetch(template("run_models.sql"), run_id)]


async def lock_run(conn, run_id: int) -> bool:
    """Take the run's coordinator lock for this session; False if another session holds it."""
    return await conn.fetchval(template("run_lock.sql"), RUN_LOCK_CLASS, run_id)


async def reopen_run(conn, run_id: int) -> None:
    await _write(conn, "resume_run.sql", run_id)


async def cancel_backends(conn, application_prefix: str) -> int:
    return await conn.fetchval(template("cancel_backends.sql"), application_prefix)


async def terminate_orphans(conn, application_prefix: str) -> int:
    return await conn.fetchval(template("terminate_orphans.sql"), application_prefix)


def schedule_shares(segments: list[dict], count: int) -> dict:
    """A run's hop-schedule figures from its ctq.segment_utilization rows (hops as the server recorded
    them), the one definition `ctq train`, `report` and `compare` print: ``span_seconds`` (the first
    hop's start to the last hop's end, s), ``utilization`` (hop seconds / (``count`` segments x span))
    and ``compute_share`` (Keras' training and evaluation seconds / (segments x span)); None without hops."""
    span = segments[0]["span_seconds"] if segments else None
    if not span:
        return {"span_seconds": span, "utilization": None, "compute_share": None}
    return {"span_seconds": span,
            "utilization": sum(s["busy_seconds"] for s in segments) / (count * span),
            "compute_share": sum(s["compute_seconds"] for s in segments) / (count * span)}


async def segment_rows(conn, run_id: int) -> list[dict]:
    """ctq.segment_utilization's rows of a run, one per segment that ran a hop."""
    return [dict(r) for r in await conn.fetch(template("report_segments.sql"), run_id)]


async def leaderboard(conn, run_id: int) -> list[dict]:
    rows = []
    for r in await conn.fetch(run_sql("leaderboard.sql"), run_id):
        row = dict(r)
        row["hyperparameters"] = json.loads(row["hyperparameters"])
        rows.append(row)
    return rows


async def completed_hops(conn, run_id: int) -> list[tuple[int, int, int]]:
    return [tuple(r) for r in await conn.fetch(template("completed_hops.sql"), run_id)]


async def recorded_hop(conn, run_id: int, model_id: int, epoch: int, segment: int) -> dict | None:
    """The hop (model, epoch, segment) of a run as recorded (its metrics and duration), or None."""
    return _row(await conn.fetchrow(template("recorded_hop.sql"), run_id, model_id, epoch, segment))


async def end_backend(conn, pid: int, application_name: str) -> bool:
    """Terminate a failed segment connection's backend if it is still there; whether it was."""
    return await conn.fetchval(template("end_backend.sql"), pid, application_name)


async def restore_checkpoints(conn, run_id: int, segments: int) -> list[dict]:
    """Each model of the run whose working state a server crash took goes back to its checkpoint
    (state_functions.sql): [{model_id, epochs (kept), lost_hops}], empty when nothing was lost.
    In a transaction of its own (Greenplum loses the distributed transaction of a SECURITY
    DEFINER function's writes outside one, see engines.greenplum)."""
    async with conn.transaction():
        return [dict(r) for r in await conn.fetch(template("restore_checkpoints.sql"), run_id, segments)]


async def run_pack(conn, run_id: int) -> dict:
    """The run's pack: id, table and the settings and statistics its data was packed with.

    Raises PermissionDenied when the caller cannot see the pack: its statistics (normalisation,
    class values, vocabularies) describe the source, so they are visible only to roles that may
    SELECT the source (row_security.sql), also for a run shared with them."""
    record = await conn.fetchrow(template("run_pack.sql"), run_id)
    if record is None:
        run = await get_run(conn, run_id)
        who = await current_role(conn)
        source = run["source_table"] if run else "its source"
        raise PermissionDenied(f"run {run_id}: role {who} cannot read the pack of {source} (the run's data, "
                               f"normalisation and classes); ask its owner or an administrator to run: "
                               f"GRANT SELECT ON {source} TO {quote_ident(who)}")
    row = dict(record)
    row["settings"], row["stats"] = json.loads(row["settings"]), PackStats.from_dict(json.loads(row["stats"]))
    return row


async def record_decision(conn, run_id: int, seq: int, decision, metric: str, search: str) -> None:
    """Record a search decision (ctq.search.Decision) as number ``seq`` of the run; a stop also
    closes the model (status 'stopped', the reason as its message, naming the ``search``: ASHA,
    Hyperband), in one transaction."""
    async with conn.transaction():
        await _write(conn, "record_decision.sql", run_id, decision.model_id, decision.rung, seq, decision.epoch,
                     metric, decision.value, "promote" if decision.promoted else "stop", decision.reason)
        if not decision.promoted:
            await _write(conn, "model_status.sql", run_id, decision.model_id, "stopped",
                         f"stopped by {search} after epoch {decision.epoch}: {decision.reason}")


async def run_decisions(conn, run_id: int) -> list[dict]:
    return [dict(r) for r in await conn.fetch(template("run_decisions.sql"), run_id)]


async def run_epochs(conn, run_id: int) -> list[dict]:
    return [dict(r) for r in await conn.fetch(template("run_epochs.sql"), run_id)]


async def epoch_metrics(conn, run_id: int, model_id: int, epoch: int) -> dict | None:
    """A model's metrics after ``epoch`` (0-based), or None if that epoch is not recorded."""
    return _row(await conn.fetchrow(template("epoch_metrics.sql"), run_id, model_id, epoch))


async def insert_model(conn, run_id: int, model_id: int, spec: ModelSpec) -> None:
    """Add a model to a running run (a search asked for it), as :func:`create_run` records them."""
    await _write(conn, "insert_model.sql", run_id, model_id, spec.name, json.dumps(spec.architecture),
                 json.dumps(spec.hyperparameters.as_dict()), spec.seed)


async def finished_models(conn, run_id: int) -> list[dict]:
    return [dict(r) for r in await conn.fetch(template("finished_models.sql"), run_id)]


async def warm_sources(conn, run_id: int, architectures: list[dict]) -> list[int | None]:
    """For each architecture spec, the model of run ``run_id`` to warm-start from: the best ranked
    (leaderboard) of that architecture with a trained state; None where the run has none."""
    specs = {m["model_id"]: json.loads(m["architecture"]) for m in await run_models(conn, run_id)}
    engine = await detect(conn)
    trained = {r["model_id"] for r in await conn.fetch(engine.template("trained_models.sql"), run_id)}
    ranked = [r["model_id"] for r in await conn.fetch(run_sql("leaderboard.sql"), run_id) if r["model_id"] in trained]
    return [next((m for m in ranked if specs[m] == spec), None) for spec in architectures]

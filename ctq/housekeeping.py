"""Run housekeeping: deleting runs (``ctq rm``) and the packs no run uses any more (``ctq packs``).

A pack is a full copy of its source (as float32 buffers), so unused ones are worth dropping. Both
deletions refuse to race with work in progress: a run whose coordinator holds its advisory lock
(catalog.RUN_LOCK_CLASS) is not deleted, and a pack is dropped only while its packing lock
(``hashtext(pack_id)``, see packing.ensure_pack) is free and no run refers to it.
"""

from __future__ import annotations

import asyncpg

from ctq import catalog
from ctq.catalog import RUN_LOCK_CLASS, check_access, run_sql
from ctq.engines import detect
from ctq.errors import NotFound, PermissionDenied, UsageError
from ctq.sql import quote_ident, render, template


def name_pattern(glob: str) -> str:
    """A shell-style pattern (``*`` any text, ``?`` one character, as psql's ``\\d`` patterns) as
    a LIKE pattern; LIKE's own ``%``, ``_`` and ``\\`` match themselves."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


async def runs_to_remove(conn: asyncpg.Connection, run_ids: list[int]) -> list[dict]:
    """The runs ``run_ids`` with their model and hop counts, checked: an id the caller cannot see
    (row-level security) or that does not exist raises NotFound, a run being driven by a live
    coordinator raises UsageError, a role that may not delete runs PermissionDenied."""
    if not await check_access(conn):
        raise await catalog.missing_run(conn, ", ".join(map(str, sorted(run_ids))), "; nothing deleted")
    rows = [dict(r) for r in await conn.fetch(run_sql("remove_runs_check.sql"),
                                              run_ids)]
    missing = sorted(set(run_ids) - {r["run_id"] for r in rows})
    if missing:
        raise NotFound(f"no run with id {', '.join(map(str, missing))}; nothing deleted")
    live = [r["run_id"] for r in rows if r["alive"]]
    if live:
        raise UsageError(f"run {', '.join(map(str, live))} is being driven by a live ctq process; stop it "
                         "(Ctrl-C or SIGTERM) before deleting it; nothing deleted")
    if not await conn.fetchval(template("may_delete_runs.sql")):
        who = await catalog.current_role(conn)
        raise PermissionDenied(f"role {who} may not delete runs (runs are the audit trail: only ctq_admin and the "
                               "installer delete them); ask an administrator to run: ctq rm "
                               + " ".join(map(str, sorted(run_ids))))
    return rows


async def remove_runs(conn: asyncpg.Connection, run_ids: list[int]) -> list[dict]:
    """Delete the runs with every row of theirs (:func:`run_tables`), all or none, in one transaction that
    holds each run's coordinator lock, so that no coordinator can start driving one meanwhile.
    Raises as :func:`runs_to_remove`; returns the deleted runs."""
    ids = sorted(set(run_ids))
    async with conn.transaction():
        rows = await runs_to_remove(conn, ids)
        for run_id in ids:
            if not await conn.fetchval(template("run_xact_lock.sql"), RUN_LOCK_CLASS, run_id):
                raise UsageError(f"run {run_id} is being driven by a live ctq process; nothing deleted")
        await conn.execute(template("drop_working_states.sql"), ids)
        for table in await run_tables(conn):
            await conn.execute(render("remove_runs.sql", table=quote_ident(table)), ids)
    return rows


async def run_tables(conn: asyncpg.Connection) -> list[str]:
    """The tables (in schema ctq) holding rows of a run, in the order :func:`remove_runs` deletes
    from them: read from the engine's catalog (run_tables.sql), the same rule on both engines."""
    engine = await detect(conn)
    return [r["name"] for r in await conn.fetch(render("run_tables.sql", catalog=engine.catalog))]


async def list_packs(conn: asyncpg.Connection) -> dict:
    """``{"packs": [...], "orphans": [...]}``: every pack the caller can see with its size in bytes
    (``None`` when its table is gone) and the number of runs using it (those the caller can see),
    and pack tables left without a catalog row by a packing that died (or is running)."""
    if not await check_access(conn):
        return {"packs": [], "orphans": []}
    engine = await detect(conn)
    size = engine.render("relation_size.sql", oid="c.oid").strip()
    packs = [dict(r) for r in await conn.fetch(engine.render("packs.sql", size=size))]
    orphans = [dict(r) for r in await conn.fetch(engine.render("orphan_packs.sql", size=size))]
    return {"packs": packs, "orphans": orphans}


def unused(listing: dict) -> list[dict]:
    """What ``gc`` drops: packs that no run uses, and orphaned pack tables."""
    return [p for p in listing["packs"] if p["runs"] == 0] + listing["orphans"]


async def check_gc_allowed(conn: asyncpg.Connection) -> None:
    """Dropping packs takes a superuser, as installing does (pack tables belong to the analysts who
    packed them, and only the installer deletes ctq.packs rows); raises PermissionDenied otherwise."""
    if not await catalog.is_superuser(conn):
        who = await catalog.current_role(conn)
        raise PermissionDenied(f"role {who} may not drop packs (they belong to the analysts who packed them); "
                               "ask an administrator (the installer) to run: ctq packs gc")


async def gc_packs(conn: asyncpg.Connection, candidates: list[dict]) -> list[dict]:
    """Drop the ``candidates`` (from :func:`unused`) that are still unused: each in its own
    transaction, under its packing lock, after deleting its catalog row only if no run refers to
    it. Returns the packs dropped (a pack that a run started using meanwhile, or that is being
    packed, is left). Orphaned tables (no "runs" key) are dropped unless a ctq.packs row appeared."""
    await check_gc_allowed(conn)
    dropped = []
    for pack in candidates:
        try:
            async with conn.transaction():
                if not await conn.fetchval(template("pack_xact_lock.sql"), pack["pack_id"]):
                    continue  # being packed right now
                if "runs" not in pack:  # an orphaned table: its packing may have finished meanwhile
                    if await conn.fetchval(template("pack_recorded.sql"), pack["pack_id"]):
                        continue
                elif await conn.fetchval(template("pack_in_use.sql"), pack["pack_id"]):
                    continue  # a run uses it now
                else:
                    await conn.execute(template("delete_pack.sql"), pack["pack_id"])
                await conn.execute(render("drop_table.sql", table=f'ctq_data."pack_{_hex(pack["pack_id"])}"'))
        except asyncpg.exceptions.ForeignKeyViolationError:
            continue  # a run being created right now refers to it
        dropped.append(pack)
    return dropped


def _hex(pack_id: str) -> str:
    if len(pack_id) != 16 or any(ch not in "0123456789abcdef" for ch in pack_id):
        raise ValueError(f"not a pack id: {pack_id!r}")
    return pack_id

"""Every connection ctq opens, in one place, with the session settings ctq's work needs.

A database or role may carry settings such as ``ALTER DATABASE ... SET statement_timeout = '3s'``
for interactive users; a warm-up, a packing statement or a long hop would be cancelled by them.
ctq's own sessions override what would stop them (``statement_timeout = 0``: ctq has its own
cancel and retry rules) and name themselves in ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from ctq.sql import render, template

SESSION_SETTINGS = {"statement_timeout": "0", "lock_timeout": "0"}


# How long the first statement of a session may wait for a server behind a connection pooler (a
# full session pool queues a client until pgbouncer's query_wait_timeout, 120 s by default)
POOL_WAIT_SECONDS = 10
POOLER_FIX = ("ctq keeps one session per segment (per-backend caches, session locks and settings): connect to "
              "the server directly, or use the pooler in session mode (pgbouncer: pool_mode = session) with room "
              "for segments + 2 sessions at once")
SHARED_SESSIONS = ("the connection goes through a pooler that shares server sessions between clients (transaction "
                   f"or statement pooling, e.g. pgbouncer pool_mode = transaction); {POOLER_FIX}")
# SQLSTATEs only a pooler that shares sessions causes: a prepared statement that "already exists"
# (another client's, on the same server session) or that "does not exist" (made on another one)
SHARED_SESSION_STATES = ("42P05", "26000")
_affinity_checked: set[str] = set()


class ConnectionLost(asyncpg.exceptions.ConnectionDoesNotExistError):
    """The server's session ended while a statement was under way (see :func:`unless_lost`)."""


async def unless_lost(conn: asyncpg.Connection, statement):
    """Await ``statement`` (a coroutine using ``conn``) unless ``conn`` is closed first: then cancel
    it and raise :class:`ConnectionLost`. asyncpg's COPY from an async iterator waits for ever once
    the server ends the session (a server crash, a full disk's PANIC, pg_terminate_backend: ctq
    load hung for ten minutes, a user trial); its termination listener does hear the end."""
    lost = asyncio.Event()

    def on_termination(_conn) -> None:
        lost.set()

    conn.add_termination_listener(on_termination)
    work, watch = asyncio.ensure_future(statement), asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise ConnectionLost("the server ended the session")
    finally:  # (also when this task is cancelled: the statement ends before the caller goes on)
        for task in (work, watch):
            task.cancel()
        await asyncio.gather(work, watch, return_exceptions=True)
        conn.remove_termination_listener(on_termination)


async def connect(dsn: str, application_name: str = "ctq") -> asyncpg.Connection:
    """A new session with ctq's settings. Behind a connection pooler (the server's process id
    differs from the one the connection announced), the pooler must give ctq whole sessions:
    DatabaseError (exit 3) when it pools transactions or statements, or when it has no server
    session free within POOL_WAIT_SECONDS."""
    from ctq.errors import DatabaseError

    try:
        conn = await asyncpg.connect(dsn, server_settings={**SESSION_SETTINGS, "application_name": application_name})
    except asyncpg.PostgresError as exc:
        if "unsupported startup parameter" in str(exc):  # pgbouncer refuses settings it does not know
            raise DatabaseError(f"a connection pooler refused ctq's session settings ({exc}); {POOLER_FIX}, and "
                                "ignore_startup_parameters = statement_timeout, lock_timeout") from None
        raise
    try:
        backend = await conn.fetchval(template("backend_pid.sql"), timeout=POOL_WAIT_SECONDS)
        if backend != conn.get_server_pid() and dsn not in _affinity_checked:
            await _check_session_affinity(conn, dsn)
            _affinity_checked.add(dsn)
    except asyncio.TimeoutError:
        conn.terminate()
        raise DatabaseError(f"no server session free within {POOL_WAIT_SECONDS} s: the connection goes through a "
                            f"pooler whose pool is full; {POOLER_FIX}") from None
    except (asyncpg.DuplicatePreparedStatementError, asyncpg.InvalidSQLStatementNameError):
        conn.terminate()  # another client's statements on "our" server session: it was shared
        raise DatabaseError(SHARED_SESSIONS) from None
    except BaseException:
        conn.terminate()
        raise
    return conn


async def _check_session_affinity(conn: asyncpg.Connection, dsn: str) -> None:
    """A pooler in transaction or statement mode hands a server session to another client between
    transactions: a session setting made on ``conn`` is then seen by a second client connection.
    (pgbouncer reuses the most recently released server first, so the second client gets it.)"""
    from ctq.errors import DatabaseError

    token = f"ctq-{id(conn)}-{conn.get_server_pid()}"
    await conn.fetchval(template("session_probe_set.sql"), token)
    other = await asyncpg.connect(dsn)
    try:
        seen = await other.fetchval(template("session_probe_get.sql"), timeout=POOL_WAIT_SECONDS)
    except asyncio.TimeoutError:
        seen = None  # a full session pool: the sessions are whole, the caller learns of the pool's size
    finally:
        other.terminate()
    if seen == token:
        raise DatabaseError(SHARED_SESSIONS)


async def all_or_none(coroutines) -> list:
    """Run them at once (one per segment connection, as concurrent targeted queries do) and return
    their results, or raise the first failure once the others are cancelled: a segment that fails
    must not leave the others training, compiling or scoring for nothing."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Snapshot:
    """One moment of the database, shared by the sessions a statement is split over (the source
    profile and the packing workers; the row check and the scoring segments), as ``pg_dump -j``
    shares one: the exporting session holds a REPEATABLE READ transaction and publishes its
    snapshot (``pg_export_snapshot()``), each other session imports it (``SET TRANSACTION
    SNAPSHOT``). Under concurrent writes they then all see the same rows, each at the same row
    identity (ctid), so a row's seeded key cannot change between two scans of the same run: a pack
    or a scoring holds every row of that moment exactly once.

    ``conn``: the exporting session, inside the transaction; ``name``: the exported snapshot's
    name (None where the engine does not export one: it then reads everything through ``conn``);
    ``as_of``: the transaction's start (timestamptz), recorded with what was read."""

    def __init__(self, conn: asyncpg.Connection, transaction, name: str | None, as_of):
        self.conn, self.name, self.as_of = conn, name, as_of
        self._transaction = transaction

    @contextlib.asynccontextmanager
    async def joined(self, conn: asyncpg.Connection):
        """A transaction on ``conn`` that reads this snapshot, committed when the block ends
        (rolled back if it raises). RuntimeError for a snapshot that was not exported."""
        if self.name is None:
            raise RuntimeError("this snapshot was not exported; read through its own connection")
        async with conn.transaction(isolation="repeatable_read"):
            await conn.execute(render("join_snapshot.sql", snapshot=self.name))
            yield conn

    async def end(self, commit: bool = True) -> None:
        """End the exporting transaction now: commit (what was written through ``conn`` becomes
        visible to others) or roll back. Sessions that joined keep their snapshot."""
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            if commit:
                await transaction.commit()
            else:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await transaction.rollback()


@contextlib.asynccontextmanager
async def snapshot(dsn: str, export: bool = True, application_name: str = "ctq snapshot"):
    """Open a session in a REPEATABLE READ transaction and yield its :class:`Snapshot` (exported
    when ``export``); the transaction commits when the block ends (or at ``Snapshot.end``) and
    rolls back if it raises. Holding it keeps the rows of that moment from being vacuumed: hold it
    while packing or scoring, no longer."""
    conn = await connect(dsn, application_name)
    try:
        transaction = conn.transaction(isolation="repeatable_read")
        await transaction.start()
        row = await conn.fetchrow(template("export_snapshot.sql" if export else "snapshot_time.sql"))
        moment = Snapshot(conn, transaction, row["name"], row["as_of"])
        try:
            yield moment
        except BaseException:
            await moment.end(commit=False)
            raise
        await moment.end()
    finally:
        await conn.close()

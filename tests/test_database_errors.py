"""Every database error class that reaches the command line becomes one line and the documented
exit code (issue 9): the mapping per SQLSTATE class, and real errors through the CLI."""

from __future__ import annotations

import pytest

from ctq.errors import DatabaseError, DataError, PermissionDenied, RunFailed, from_database


class FakeServerError(Exception):
    """Stands in for an asyncpg error object: the mapping only reads sqlstate and message."""

    def __init__(self, sqlstate, message):
        super().__init__(message)
        self.sqlstate, self.message = sqlstate, message


@pytest.mark.parametrize("sqlstate, kind, code, words", [
    ("08006", DatabaseError, 3, "connection"),
    ("53100", DatabaseError, 3, "ran out of resources"),
    ("53300", DatabaseError, 3, "ran out of resources"),
    ("57014", DatabaseError, 3, "statement_timeout"),
    ("57P01", DatabaseError, 3, "shutting down"),
    ("58030", DatabaseError, 3, "system error"),
    ("42501", PermissionDenied, 2, "permission denied"),  # a missing privilege: 2 wherever found
    ("42P01", DatabaseError, 3, "missing object"),
    ("22012", DataError, 2, "data could not be used"),
    ("23505", RunFailed, 1, "constraint"),
    ("40P01", RunFailed, 1, "rolled back"),
    ("XX000", RunFailed, 1, "internal error"),
    ("P0001", RunFailed, 1, "reported an error"),
    ("", DatabaseError, 3, "cannot talk to the database"),
])
def test_each_sqlstate_class_has_a_message_and_an_exit_code(sqlstate, kind, code, words):
    error = from_database(FakeServerError(sqlstate, "the server's \x1b[1mwords\x1b[0m\nsecond line"))
    assert isinstance(error, kind) and error.exit_code == code
    assert words in str(error) and "the server's words second line" in str(error)
    assert "\n" not in str(error) and "\x1b" not in str(error)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_server_error_outside_ctq_s_checks_is_one_line(dsn, conn, tmp_path, run_cli):
    """A role that may not connect: the server's refusal (SQLSTATE 28000-class or 42501) is a
    one-line error with an exit code, not a traceback."""
    await conn.execute("DROP ROLE IF EXISTS ctq_nologin; CREATE ROLE ctq_nologin NOLOGIN")
    other = dsn.replace("postgresql://ctq@", "postgresql://ctq_nologin@")
    proc = run_cli("runs", env={"CTQ_DSN": other})
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "ctq_nologin" in proc.stderr


@pytest.mark.asyncio(loop_scope="session")
async def test_no_server_at_the_address_says_so(tmp_path):
    """A unix socket that is not there (a server down or restarting: what a hop retried said was
    a bare "[Errno 2] No such file or directory", a user trial), and a port nobody listens on."""
    import asyncpg

    for dsn in (f"postgresql://ctq@/ctq?host={tmp_path}&port=5999", "postgresql://ctq@127.0.0.1:1/ctq"):
        with pytest.raises(OSError) as caught:
            await asyncpg.connect(dsn, timeout=10)
        error = from_database(caught.value)
        assert isinstance(error, DatabaseError) and error.exit_code == 3
        assert str(error).startswith("cannot talk to the database: ") and "is it running?" in str(error), str(error)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_connection_the_server_closed_says_so(dsn, conn):
    """A session the server ended (pg_terminate_backend) while a transaction was open: asyncpg's
    "cannot call Transaction.__aexit__(): the underlying connection is closed" reached a hop's
    retry line as it was (a user trial on Greenplum)."""
    import asyncio

    import asyncpg

    victim = await asyncpg.connect(dsn)
    with pytest.raises(asyncpg.InterfaceError) as caught:
        async with victim.transaction():
            await conn.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
            for _ in range(100):  # until the client has seen the session end
                if victim.is_closed():
                    break
                await asyncio.sleep(0.05)
    error = from_database(caught.value)
    assert isinstance(error, DatabaseError) and error.exit_code == 3
    assert str(error) == ("cannot talk to the database: the connection was closed (the server ended the session, "
                          "or the network dropped it)"), str(error)

"""Exceptions that carry the CLI exit code, so every layer can fail with the right one.

Exit codes (stable, documented in the README and ``ctq --help``): 0 success, 1 a training/run
failure, 2 usage or configuration error (bad YAML, missing column, bad data, bad option),
3 the database cannot be reached or used (malformed DSN, server down, PL/Python or privileges
missing), 130 interrupted. Scripts can tell "fix my input" (2) from "retry later" (3) from
"the training itself failed" (1).
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def plain_text(text: str) -> str:
    """``text`` without terminal escape codes: Keras colours some of its error messages, and those
    end up in logs, JSON and the catalog, where escape codes are noise."""
    return _ANSI.sub("", text)


class CtqError(Exception):
    """Base class: ``str(err)`` is what the user sees; ``exit_code`` is what the process returns.

    ``run_id`` is set once the error concerns a recorded run, so that ``--json`` can name it.
    """

    exit_code = 1
    run_id: int | None = None


class ConfigError(CtqError):
    """The configuration file is wrong. Names the file and the key path (``models[1].layers[0]``)."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        self.reason = message
        where = ":".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class DataError(CtqError):
    """The source data cannot be used as configured (missing column, NULLs, non-numeric values)."""

    exit_code = 2


class DatabaseError(CtqError):
    """The database cannot be reached or is not set up (no plpython3u, ctq not installed...)."""

    exit_code = 3


class RunFailed(CtqError):
    """A run ended with failed models or could not finish."""

    exit_code = 1


class Interrupted(CtqError):
    """The run was cancelled by SIGINT/SIGTERM; it stays resumable."""

    exit_code = 130


class NotFound(CtqError):
    """A run or model id that does not exist (a usage error)."""

    exit_code = 2


class PermissionDenied(CtqError):
    """The database refuses this role something (no SELECT on the source, not a ctq user): one
    line naming the missing privilege and who can fix it. Exit 2: the fix is a grant, not a retry."""

    exit_code = 2


class UsageError(CtqError):
    """The command line itself is wrong (a missing argument, an option without its value)."""

    exit_code = 2


# SQLSTATE class (first two characters) -> (error type, what it means for the user). PostgreSQL
# Appendix A; Greenplum uses the same codes. Anything not listed is a run failure (exit 1).
_SQLSTATE_CLASSES = {
    "08": (DatabaseError, "the connection to the database failed"),
    "53": (DatabaseError, "the database server ran out of resources (disk, memory or connections)"),
    "57": (DatabaseError, "the database server stopped the statement (cancelled, shutting down, or a "
                          "server setting such as statement_timeout)"),
    "58": (DatabaseError, "the database server hit a system error"),
    "42": (DatabaseError, "the database refused a statement (a missing privilege or object)"),
    "22": (DataError, "the data could not be used"),
    "23": (RunFailed, "a write broke a constraint of ctq's catalog"),
    "40": (RunFailed, "a transaction was rolled back (serialization failure or deadlock)"),
    "XX": (RunFailed, "the database server reported an internal error"),
}


def from_database(exc: BaseException) -> CtqError:
    """The one place that turns a database error that reached the command line into a one-line
    message and an exit code: by SQLSTATE class, with the server's own message (and, for a
    missing privilege, who lacks it). Errors ctq expects are raised as CtqError earlier."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    message = " ".join(plain_text(getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
    if not sqlstate:  # the client side of a connection: refused, reset, DNS...
        return DatabaseError(f"cannot talk to the database: {message}")
    kind, meaning = _SQLSTATE_CLASSES.get(sqlstate[:2], (RunFailed, "the database reported an error"))
    if sqlstate == "42501":
        meaning = "a privilege is missing (ask the database administrator, or see `ctq doctor`)"
    return kind(f"{meaning}: {message} (SQLSTATE {sqlstate})")

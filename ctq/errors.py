"""Exceptions that carry the CLI exit code, so every layer can fail with the right one.

Exit codes (stable; :data:`EXIT_CODES` is what ``ctq --help`` and docs/cli.md print): 0 success, 1
a training/run failure, 2 usage or configuration error or a missing privilege, 3 the database cannot
be reached or used, 130 interrupted. Scripts can tell "fix my input or ask for the grant" (2) from "retry
later" (3) from "the training itself failed" (1).

A missing privilege is exit 2 wherever it is found: by ctq's own checks before anything is written
(PermissionDenied), by a statement the server refuses with SQLSTATE 42501 (:func:`permission_denied`,
which :func:`from_database` and ``api.connect`` use), or by a hop inside a run (the coordinator stops
the run instead of failing the model: it resumes once the grant is given).
"""

from __future__ import annotations

import re

#: The exit codes, one source for ``ctq --help`` and docs/cli.md (docs/generate.py): (code, what it
#: means, what a script should do about it).
EXIT_CODES = (
    (0, "success", ""),
    (1, "a training or run failure (a model failed, a hop kept failing for a reason of its own); for ctq db "
        "status: not running",
     "look at the run: ctq models RUN_ID"),
    (2, "usage or configuration error (bad option, grid.yaml, data) or a missing privilege, wherever found",
     "fix the input or ask for the grant"),
    (3, "the database cannot be reached or used (malformed DSN, server down, PL/Python missing; in a run: a hop "
        "kept failing so, connections cut or refused, too many clients)",
     "retrying later may help; a run resumes: ctq train --resume RUN_ID"),
    (130, "interrupted (Ctrl-C, SIGTERM, a closed terminal)", "the run can be resumed: ctq train --resume RUN_ID"),
)

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


#: what PL/Python puts before the message of an error raised in a nested call (plpy.Error: ...)
_PLPY_PREFIX = re.compile(r"^(?:plpy\.(?:Error|SPIError|Fatal): )+")


def plain_text(text: str) -> str:
    """``text`` without terminal escape codes (Keras colours some of its error messages, and those
    end up in logs, JSON and the catalog, where escape codes are noise) and without PL/Python's
    ``plpy.Error:`` wrapper."""
    return _PLPY_PREFIX.sub("", _ANSI.sub("", text))


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

    def in_file(self, path: str | None) -> DataError:
        """This error named as a ConfigError names its place: ``grid.yaml:data.label: ...``, so that a
        user with several grid files knows which one's data section it is about."""
        if not path or path.startswith("<") or str(self).startswith(f"{path}:"):
            return self
        return DataError(f"{path}:{self}")


class TooLarge(CtqError):
    """A model whose training would not fit a segment's memory (ctq.memory), refused before the
    warm-up builds anything: the input is what must change, so exit 2."""

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
    line naming the missing privilege and who can fix it. Exit 2: the fix is a grant, not a retry
    (also when the server finds it: SQLSTATE 42501, see :func:`permission_denied`)."""

    exit_code = 2


class UsageError(CtqError):
    """The command line itself is wrong (a missing argument, an option without its value)."""

    exit_code = 2


CTQ_SCHEMAS = ("ctq", "ctq_data", "ctq_catalog")
CTQ_RELATIONS = re.compile(r"(runs|models|hops|epochs|decisions|packs|meta|server_code|leaderboard|learning_curves|"
                           r"segment_utilization|runs_run_id_seq|pack_[0-9a-f]{16}|score_[0-9a-f]{16})")


def privilege_hint(message: str, user: str | None) -> str:
    """The fix for a missing privilege, from the server's message: ``ctq grant`` for ctq's own
    objects (or row-level security), else the GRANT the object's owner can give. PostgreSQL names
    a table without its schema, so one is ctq's when its name is one of ctq's. ``user``: the role
    that lacks it (None: not known here)."""
    user = user or "<your role>"
    create = re.search(r'permission denied to create "([^".]+)\.', message)
    if create is not None:  # a table in a schema that takes none of this role's (or none at all)
        if create[1] in ("pg_catalog", "information_schema", "pg_toast"):
            return f"{create[1]} is the system catalog, which takes no new tables: use another schema"
        return f"ask its owner or an administrator for: GRANT CREATE ON SCHEMA {create[1]} TO {user}"
    found = re.search(r"permission denied for (schema|table|relation|view|sequence) (\S+)", message)
    if found is None:
        return f"ask an administrator to run: ctq grant {user}"
    schema, _, name = found[2].replace('"', "").rpartition(".")
    if (found[1] == "schema" and name in CTQ_SCHEMAS) or (found[1] != "schema" and (
            schema in CTQ_SCHEMAS or (not schema and CTQ_RELATIONS.fullmatch(name)))):
        return f"ask an administrator to run: ctq grant {user}"
    kind, name = found[1], found[2]
    if kind == "schema":
        return (f"ask its owner or an administrator for: GRANT USAGE ON SCHEMA {name} TO {user} (to read in it) "
                f"or GRANT CREATE ON SCHEMA {name} TO {user} (to create tables in it)")
    return (f"ask its owner or an administrator for the privilege on {name} "
            f"(to read it: GRANT SELECT ON {name} TO {user})")


MISSING_PRIVILEGE = "42501"  # insufficient_privilege, row-level security's refusals included


def is_missing_privilege(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == MISSING_PRIVILEGE


def permission_denied(exc: BaseException, user: str | None = None) -> PermissionDenied:
    """A statement the server refused for a missing privilege (SQLSTATE 42501) as the one-line
    PermissionDenied (exit 2): the server's message and the fix (``user``: the role, if known)."""
    message = " ".join(plain_text(getattr(exc, "message", None) or str(exc)).split())
    schema = re.fullmatch(r'permission denied for schema "?(\w+)"?', message)
    if schema is not None and schema[1] in CTQ_SCHEMAS:  # the use of ctq's schemas comes with ctq_user
        return PermissionDenied(f"role {user or '<your role>'} is not a member of ctq_user (no use of schema "
                                f"{schema[1]}); {privilege_hint(message, user)}")
    return PermissionDenied(f"permission denied ({message}); {privilege_hint(message, user)}")


# SQLSTATE class (first two characters) -> (error type, what it means for the user). PostgreSQL
# Appendix A; Greenplum uses the same codes. Anything not listed is a run failure (exit 1).
_SQLSTATE_CLASSES = {
    "08": (DatabaseError, "the connection to the database failed"),
    "53": (DatabaseError, "the database server ran out of resources (disk, memory or connections)"),
    "57": (DatabaseError, "the database server stopped the statement (cancelled, shutting down, or a "
                          "server setting such as statement_timeout)"),
    "58": (DatabaseError, "the database server hit a system error"),
    "42": (DatabaseError, "the database refused a statement (a missing object, or one it cannot run)"),
    "22": (DataError, "the data could not be used"),
    "2B": (DataError, "a table cannot be dropped or replaced while other objects depend on it"),
    "23": (RunFailed, "a write broke a constraint of ctq's catalog"),
    "40": (RunFailed, "a transaction was rolled back (serialization failure or deadlock)"),
    "XX": (RunFailed, "the database server reported an internal error"),
}


def from_database(exc: BaseException) -> CtqError:
    """The one place that turns a database error that reached the command line into a one-line
    message and an exit code: by SQLSTATE class, with the server's own message (and, for a
    missing privilege, the fix: :func:`permission_denied`). Errors ctq expects are raised as
    CtqError earlier."""
    from ctq.connection import SHARED_SESSION_STATES, SHARED_SESSIONS

    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate == MISSING_PRIVILEGE:
        return permission_denied(exc)
    if sqlstate in SHARED_SESSION_STATES:
        return DatabaseError(SHARED_SESSIONS)
    message = " ".join(plain_text(getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
    if not sqlstate:  # the client side of a connection: refused, reset, DNS...
        if isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):  # no socket: "[Errno 2] No such file..."
            message += " (no server listens there: is it running?)"
        elif message.endswith("connection is closed"):  # asyncpg's, e.g. "cannot call Transaction.__aexit__():
            message = "the connection was closed (the server ended the session, or the network dropped it)"  # ..."
        return DatabaseError(f"cannot talk to the database: {message}")
    kind, meaning = _SQLSTATE_CLASSES.get(sqlstate[:2], (RunFailed, "the database reported an error"))
    detail = " ".join(plain_text(getattr(exc, "detail", None) or "").split())  # e.g. which view depends on it
    return kind(f"{meaning}: {message}{f' ({detail})' if detail else ''} (SQLSTATE {sqlstate})")

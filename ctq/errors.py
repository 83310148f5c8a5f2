"""Exceptions that carry the CLI exit code, so every layer can fail with the right one.

Exit codes (stable, documented in the README): 0 success, 1 a training/run failure,
2 usage or configuration error (bad YAML, missing column, bad data), 130 interrupted.
"""

from __future__ import annotations


class CtqError(Exception):
    """Base class: ``str(err)`` is what the user sees; ``exit_code`` is what the process returns."""

    exit_code = 1


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

    exit_code = 1


class RunFailed(CtqError):
    """A run ended with failed models or could not finish."""

    exit_code = 1


class Interrupted(CtqError):
    """The run was cancelled by SIGINT/SIGTERM; it stays resumable."""

    exit_code = 130


class NotFound(CtqError):
    """A run or model id that does not exist (a usage error)."""

    exit_code = 2


class UsageError(CtqError):
    """The command line itself is wrong (a missing argument, an option without its value)."""

    exit_code = 2

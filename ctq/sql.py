"""SQL lives in ``sql_templates/``; this module finds, fills and quotes it.

Placeholders are ``{{name}}``. Values that reach SQL text are either identifiers quoted by
:func:`quote_ident` or integers: user input never goes into a template unquoted. Data values
travel as bind parameters.
"""

from __future__ import annotations

import hashlib
import re
import sys
from functools import lru_cache
from pathlib import Path

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def templates_dir() -> Path:
    """The repository's ``sql_templates/`` (editable install) or the copy a wheel installs."""
    for candidate in (Path(__file__).resolve().parent.parent / "sql_templates",
                      Path(sys.prefix) / "share" / "ctq" / "sql_templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("sql_templates/ not found next to the ctq package or under sys.prefix/share/ctq")


@lru_cache(maxsize=None)
def template(name: str) -> str:
    return (templates_dir() / name).read_text()


def render(name: str, **values: object) -> str:
    """Fill ``{{name}}`` placeholders; a missing value is an error, not an empty string."""

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template {name} needs a value for {{{{{key}}}}}")
        return str(values[key])

    return _PLACEHOLDER.sub(fill, template(name))


def quote_ident(name: str) -> str:
    """Quote one identifier the way PostgreSQL's quote_ident does (always quoting)."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def server_code() -> tuple[str, str]:
    """The in-database module's source and its sha256 (the version the functions check)."""
    source = (Path(__file__).resolve().parent / "indb.py").read_text()
    return source, hashlib.sha256(source.encode()).hexdigest()


def install_script() -> str:
    """install.sql with the PL/Python bootstrap spliced into every function body."""
    _, sha = server_code()
    bootstrap = render("bootstrap.py", indb_sha=sha)
    return render("install.sql", bootstrap=bootstrap)


def install_fingerprint() -> str:
    """Changes whenever the catalog, the functions or the server code change: re-install then."""
    return hashlib.sha256(install_script().encode()).hexdigest()

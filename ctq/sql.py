"""SQL lives in ``sql_templates/``; this module finds, fills and quotes it.

Templates are dispatched per engine, as dbt adapters dispatch their macros: a statement is looked
up first in ``sql_templates/<engine>/`` and then in ``sql_templates/common/``, so an engine folder
holds only the statements that really differ on that engine. A folder with a file ``inherits``
(one folder name) is looked up before that folder: ``citus/`` holds only what differs from
``postgres/``.

A template may include another, ``{{include name.sql}}``, looked up the same way for the same
engine, or, where no folder of the engine has it, as a path from ``sql_templates/``
(``{{include common/heartbeat.sql}}``: that folder's version, even where the engine has its own):
what several engines' statements share (a table's columns, a catalog write) is written once.

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
_INCLUDE = re.compile(r"\{\{include ([\w/.-]+)\}\}\n?")


def templates_dir() -> Path:
    """The repository's ``sql_templates/`` (editable install) or the copy a wheel installs."""
    for candidate in (Path(__file__).resolve().parent.parent / "sql_templates",
                      Path(sys.prefix) / "share" / "ctq" / "sql_templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("sql_templates/ not found next to the ctq package or under sys.prefix/share/ctq")


COMMON = "common"


@lru_cache(maxsize=None)
def folders(engine: str = COMMON) -> tuple[str, ...]:
    """The folders of ``sql_templates/`` a statement of ``engine`` is looked up in, in order: the
    engine's, the ones it inherits (its ``inherits`` file), then ``common``."""
    chain = [engine]
    while (parent := templates_dir() / chain[-1] / "inherits").is_file():
        chain.append(parent.read_text().strip())
    return tuple(dict.fromkeys((*chain, COMMON)))


@lru_cache(maxsize=None)
def template(name: str, engine: str = COMMON) -> str:
    """The text of ``name`` for ``engine``: its own version if it has one, else that of the folder
    it inherits (:func:`folders`), else the common one, else the file ``name`` names from ``sql_templates/``; its
    includes filled in."""
    for path in [templates_dir() / folder / name for folder in folders(engine)] + [templates_dir() / name]:
        if path.is_file():
            return _INCLUDE.sub(lambda m: template(m.group(1), engine), path.read_text())
    raise FileNotFoundError(f"no SQL template {name!r} for engine {engine!r} (nor in common/)")


def render(name: str, engine: str = COMMON, **values: object) -> str:
    """Fill ``{{name}}`` placeholders; a missing value is an error, not an empty string."""

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template {name} needs a value for {{{{{key}}}}}")
        return str(values[key])

    return _PLACEHOLDER.sub(fill, template(name, engine))


def quote_ident(name: str) -> str:
    """Quote one identifier the way PostgreSQL's quote_ident does (always quoting)."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


SERVER_MODULES = ("rules", "indb")  # ctq/<name>.py run by the server, in the order bootstrap.py loads them


def server_code() -> tuple[dict[str, str], str]:
    """The in-database modules' sources by name (SERVER_MODULES) and one sha256 of them all (the
    version the functions check)."""
    here = Path(__file__).resolve().parent
    sources = {name: (here / f"{name}.py").read_text() for name in SERVER_MODULES}
    return sources, hashlib.sha256("\0".join(sources[n] for n in SERVER_MODULES).encode()).hexdigest()


def install_script(engine: str = "postgres") -> str:
    """The engine's install.sql with the PL/Python bootstrap spliced into every function body, the
    engine's table distribution clauses (empty on PostgreSQL) filled in, and ``{{catalog}}``, the
    schema of the run and pack tables (catalog_schema.sql: ``ctq`` on PostgreSQL, where row-level
    security keeps analysts apart; on Greenplum a private schema behind same-named views in ``ctq``)."""
    _, sha = server_code()
    bootstrap = render("bootstrap.py", engine, indb_sha=sha, server_modules=repr(SERVER_MODULES))
    clauses = {key: template(f"distribution/{key}.sql", engine).strip()
               for key in ("replicated", "by_run", "by_pack")}
    catalog = template("catalog_schema.sql", engine).strip()
    upgrade = render("install_upgrade.sql", engine, legacy_states=template("legacy_states.sql", engine))
    return render("install.sql", engine, engine_name=engine, bootstrap=bootstrap, upgrade=upgrade,
                  security=render("security.sql", engine, roles=template("security_roles.sql", engine),
                                  catalog=catalog),
                  row_security=render("row_security.sql", engine, catalog=catalog,
                                      state_policy_tables=template("state_policy_tables.sql", engine).strip()),
                  views=render("views.sql", engine, catalog=catalog),
                  catalog_layout=template("catalog_layout.sql", engine),
                  catalog_views=template("catalog_views.sql", engine), catalog=catalog,
                  state_tables=render("state_tables.sql", engine, catalog=catalog),
                  state_functions=render("state_functions.sql", engine, catalog=catalog),
                  working_states=render(f"working_states_{template('working_state_store.sql', engine).strip()}.sql",
                                        engine, catalog=catalog, bootstrap=bootstrap),
                  hop_functions=template("hop_functions.sql", engine),
                  **{f"distributed_{k}": v for k, v in clauses.items()})


def install_fingerprint(engine: str = "postgres") -> str:
    """Changes whenever the catalog, the functions or the server code change: re-install then."""
    return hashlib.sha256(install_script(engine).encode()).hexdigest()


# Values per batch row of column_batches: a parallel (or Greenplum two-phase) aggregate passes every
# aggregate's partial state up as one column, and PostgreSQL caps a row at 1,664 columns; at five
# aggregates a value, 256 values keep that row under 1,300 columns whatever the source's width.
BATCH_VALUES = 256


def column_batches(values: list[str], source: str, engine: str, columns: list[str], width: int = BATCH_VALUES,
                   per_row: dict[str, str] | None = None) -> tuple[str, int, str]:
    """The FROM clause of a batched scan of ``source`` (SQL, e.g. a quoted table name) on
    ``engine``: each row of ``source`` (alias ``t`` inside) becomes ``ceil(len(values) / width)``
    rows ``(ctq_batch, ctq_1 .. ctq_k, <per_row names>)`` (alias ``c``), batch b carrying values
    ``b*k .. b*k+k-1`` (float8 SQL expressions over ``t``; the last batch padded with NULLs) and,
    in every batch, the ``per_row`` expressions (name -> SQL). Returns the clause, ``k`` and the
    alias through which the statement reads ``columns`` (quoted names of ``source``) outside the
    batches: ``t``, or ``c`` where the batch row carries them.

    Every expression is a column of a subquery, named once however many batch rows read it: an
    engine whose planner would otherwise compute it once per reader keeps that subquery (Greenplum's
    batch_rows.sql), so that an expression several aggregates filter on is computed once a row. The
    subquery passes on ``columns`` only, not every column of ``source``: with the values, the
    whole row of a 1,600-column table would pass the 1,664 entries a target list may have.

    Why batches: a statement with a few aggregates per column (the source profile, the scoring
    checks) would otherwise grow with the width until its partial aggregate row passes
    PostgreSQL's 1,664-column limit (from ~330 columns). Grouped by ``ctq_batch``, the same single
    scan aggregates slots ``ctq_1 .. ctq_k`` only, a fixed number of columns. Aggregate
    ``c.ctq_i``, GROUP BY ``c.ctq_batch``, and read batch b's slot i as value ``b*k + i - 1``.

    A table of one batch (up to ``width`` values) is one subquery whose columns are the batch
    row's, ``columns`` included (batch_row.sql): no row of VALUES joined to each source row, which
    Greenplum 6 (PostgreSQL 9.4) does not pull up (a Nested Loop: 1M rows x 33 values on 2
    segments, 2.6 s against 2.0 s). Not where one of ``columns`` has a batch column's name."""
    k = max(1, min(width, len(values)))
    extra = per_row or {}
    names = ["ctq_batch", *(f"ctq_{i}" for i in range(1, k + 1)), *extra]
    if len(values) <= k and not {quote_ident(n) for n in names} & set(columns):
        single = [*(f"t.{name}" for name in columns), "0 AS ctq_batch",
                  *(f"{sql} AS ctq_{i}" for i, sql in enumerate(values, 1)),
                  *(f"NULL::float8 AS ctq_{i}" for i in range(len(values) + 1, k + 1)),
                  *(f"{sql} AS {name}" for name, sql in extra.items())]
        return render("batch_row.sql", engine, source=source, columns=", ".join(single)), k, "c"
    computed = [*values, *extra.values()]
    # (named with spaces, so that none is one of ``columns``, which the subquery passes on too)
    column = [quote_ident(f"ctq value {i}") for i in range(len(computed))]
    rows = []
    for b, start in enumerate(range(0, max(1, len(values)), k)):
        part = [f"t.{name}" for name in column[start:min(start + k, len(values))]]
        part += ["NULL::float8"] * (k - len(part))
        rows.append(f"({', '.join([str(b), *part, *(f't.{name}' for name in column[len(values):])])})")
    return render("batch_rows.sql", engine, source=source, rows=", ".join(rows),
                  computed=", ".join([*(f"t.{name}" for name in columns),
                                      *(f"{sql} AS {name}" for sql, name in zip(computed, column))]),
                  names=", ".join(names)), k, "t"


def unbatch(rows, column: str, count: int) -> list:
    """Batch rows' per-slot arrays (``column``), in batch order, as one list of ``count`` values."""
    out = []
    for row in sorted(rows, key=lambda r: r["ctq_batch"]):
        out.extend(row[column])
    return out[:count]

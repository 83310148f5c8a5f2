"""`ctq load`: a CSV file with a header row into a new table (for demos and tests).

Column types are inferred from the values: bigint if every value is an integer, float8 if every
value is a number, text otherwise; empty fields are NULL. Real users' data is already in the
database, so this stays deliberately small.
"""

from __future__ import annotations

import csv
from pathlib import Path

import asyncpg

from ctq.errors import ConfigError, DataError
from ctq.sql import qualified, quote_ident, render


def _parse_table(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def _column_type(values: list[str]) -> str:
    present = [v for v in values if v != ""]
    try:
        for v in present:
            int(v)
        return "bigint"
    except ValueError:
        pass
    try:
        for v in present:
            float(v)
        return "float8"
    except ValueError:
        return "text"


def _convert(value: str, kind: str):
    if value == "":
        return None
    return int(value) if kind == "bigint" else float(value) if kind == "float8" else value


async def load_csv(conn: asyncpg.Connection, path: str | Path, table: str, *, replace: bool = False) -> int:
    """Create ``table`` from the CSV at ``path`` and copy the rows in, in one transaction."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or any(not h.strip() for h in header):
            raise DataError(f"{path}: the first line must be a header naming every column")
        if len(set(header)) != len(header):
            raise DataError(f"{path}: duplicate column names in the header")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: expected {len(header)} fields, found {len(row)}")
    kinds = [_column_type([r[i] for r in rows]) for i in range(len(header))]
    schema, name = _parse_table(table)
    target = qualified(schema, name)
    columns = ", ".join(f"{quote_ident(h.strip())} {k}" for h, k in zip(header, kinds))
    async with conn.transaction():
        if replace:
            await conn.execute(f"DROP TABLE IF EXISTS {target}")
        try:
            await conn.execute(render("load_create.sql", table=target, columns=columns))
        except asyncpg.exceptions.DuplicateTableError as exc:
            raise DataError(f"table {table!r} already exists (use --replace to overwrite it)") from exc
        except asyncpg.exceptions.InvalidSchemaNameError as exc:
            raise DataError(f"schema {schema!r} does not exist") from exc
        records = [tuple(_convert(v, k) for v, k in zip(r, kinds)) for r in rows]
        await conn.copy_records_to_table(name, records=records, schema_name=schema,
                                         columns=[h.strip() for h in header])
    return len(rows)

"""Data checks and packing: the source table becomes per-segment float32 buffers, once.

Checks run read-only before anything is written (missing table or column, non-numeric types,
NULLs), so a bad configuration leaves the database untouched. Packing is keyed by the source's
content fingerprint and the packing settings: an unchanged source is never packed twice, a
changed one gets a new pack (and the in-database caches, keyed by the pack table, follow).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import asyncpg

from ctq.config import DataConfig
from ctq.errors import DataError
from ctq.indb import SQLSTATE_DATA
from ctq.sql import qualified, quote_ident, render, template

DEFAULT_BUFFER_BYTES = 4 << 20  # ~4 MiB of float32 features per buffer row


@dataclass(frozen=True)
class Source:
    """A source table resolved against the catalog, with its columns checked."""

    oid: int
    schema: str
    name: str
    features: tuple[str, ...]
    label: str
    array_feature: bool
    rows: int
    fingerprint: str
    width: int  # number of input features (the array length for an array column)

    @property
    def sql_name(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def display_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Pack:
    pack_id: str
    table_name: str
    stats: dict
    reused: bool


async def _find_relation(conn, schema: str | None, name: str):
    row = await conn.fetchrow(template("find_relation.sql"), schema, name)
    if row is None and name != name.lower():  # unquoted names in SQL fold to lower case
        row = await conn.fetchrow(template("find_relation.sql"), schema, name.lower())
    return row


def _match_column(wanted: str, columns: dict[str, dict], key: str) -> dict:
    col = columns.get(wanted) or columns.get(wanted.lower())
    if col is None:
        available = ", ".join(sorted(columns)) or "(none)"
        raise DataError(f"{key}: column {wanted!r} does not exist in the source table (columns: {available})")
    return col


async def inspect_source(conn: asyncpg.Connection, data: DataConfig) -> Source:
    """Resolve and check the source table; raises DataError naming the table or column at fault."""
    rel = await _find_relation(conn, data.schema, data.name)
    if rel is None:
        raise DataError(f"data.table: table {data.table!r} does not exist (or is not visible to this user)")
    columns = {r["name"]: dict(r) for r in await conn.fetch(template("source_columns.sql"), rel["oid"])}
    features = [_match_column(f, columns, f"data.features[{i}]") for i, f in enumerate(data.features)]
    label = _match_column(data.label, columns, "data.label")
    array_feature = len(features) == 1 and features[0]["category"] == "A"
    for i, col in enumerate(features):
        numeric = col["category"] == "N" or (array_feature and col["element_category"] == "N")
        if not numeric:
            raise DataError(
                f"data.features[{i}]: column {col['name']!r} has type {col['type']}, not a number "
                "(features must be numeric columns, or a single real[]/float8[] column)"
            )
    if label["category"] not in ("N", "B"):
        raise DataError(f"data.label: column {label['name']!r} has type {label['type']}, not a number")
    if label["name"] in {c["name"] for c in features}:
        raise DataError(f"data.label: column {label['name']!r} is also listed as a feature")
    names = [c["name"] for c in features] + [label["name"]]
    quoted = [quote_ident(n) for n in names]
    source_sql = qualified(rel["schema"], rel["name"])
    scalar = [q for q, c in zip(quoted, features + [label]) if c["category"] == "N"]
    profile = await conn.fetchrow(
        render("source_profile.sql",
               null_counts=", ".join(f"count(*) FILTER (WHERE {q} IS NULL)" for q in quoted),
               nonfinite_counts=", ".join(
                   f"count(*) FILTER (WHERE {q}::float8 IN ('NaN', 'Infinity', '-Infinity'))" for q in scalar
               ) or "0",
               label=quoted[-1], columns=", ".join(quoted), source=source_sql)
    )
    if profile["n"] == 0:
        raise DataError(f"data.table: table {data.table!r} has no rows")
    scalar_names = [n for n, c in zip(names, features + [label]) if c["category"] == "N"]
    for name, nulls, nonfinite in zip(names, profile["nulls"], _align(names, scalar_names, profile["nonfinite"])):
        key = "data.label" if name == label["name"] else "data.features"
        if nulls:
            raise DataError(f"{key}: column {name!r} has {nulls} NULL value(s) of {profile['n']} rows; "
                            "filter or impute them (e.g. a view) before training")
        if nonfinite:
            raise DataError(f"{key}: column {name!r} has {nonfinite} NaN or infinite value(s)")
    if data.task == "classification":
        if profile["label_fractional"]:
            raise DataError(f"data.label: column {label['name']!r} has non-integer values; classification "
                            "needs class ids (use task: regression for a continuous target)")
        if profile["label_values"] < 2:
            raise DataError(f"data.label: column {label['name']!r} has a single class; nothing to learn")
    width = len(features)
    if array_feature:
        width = await conn.fetchval(render("array_width.sql", column=quoted[0], source=source_sql))
    return Source(
        oid=rel["oid"], schema=rel["schema"], name=rel["name"], features=tuple(c["name"] for c in features),
        label=label["name"], array_feature=array_feature, rows=profile["n"], fingerprint=profile["fingerprint"],
        width=width,
    )


def _align(names: list[str], subset: list[str], values: list[int]) -> list[int]:
    """Spread per-column counts of ``subset`` over ``names`` (0 for columns not in the subset)."""
    by_name = dict(zip(subset, values))
    return [by_name.get(n, 0) for n in names]


def default_buffer_rows(source: Source, segments: int) -> int:
    per_segment = max(1, source.rows // segments)
    return max(1, min(per_segment, DEFAULT_BUFFER_BYTES // (max(1, source.width) * 4)))


def pack_settings(data: DataConfig, source: Source, segments: int, seed: int) -> dict:
    return {
        "task": data.task,
        "features": list(source.features),
        "label": source.label,
        "array_feature": source.array_feature,
        "validation_fraction": data.validation_fraction,
        "segments": segments,
        "seed": seed,
        "buffer_rows": data.buffer_rows or default_buffer_rows(source, segments),
    }


async def ensure_pack(conn: asyncpg.Connection, data: DataConfig, source: Source, segments: int, seed: int) -> Pack:
    """Return the pack for this source content + settings, creating it (atomically) if needed."""
    settings = pack_settings(data, source, segments, seed)
    digest = hashlib.sha256(
        json.dumps([source.display_name, source.fingerprint, settings], sort_keys=True).encode()
    ).hexdigest()[:16]
    table = f"ctq_data.pack_{digest}"
    found = await conn.fetchrow(template("pack_find.sql"), digest)
    if found:
        return Pack(digest, found["table_name"], json.loads(found["stats"]), reused=True)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", digest)
            found = await conn.fetchrow(template("pack_find.sql"), digest)  # a concurrent run packed it
            if found:
                return Pack(digest, found["table_name"], json.loads(found["stats"]), reused=True)
            await conn.execute(render("pack_create.sql", table=table, validation_partition=f"{table}_val"))
            for s in range(segments):
                await conn.execute(render("pack_partition.sql", table=table, partition=f"{table}_s{s}", segment=s))
            stats_text = await conn.fetchval(
                template("pack_run.sql"),
                source.sql_name, [quote_ident(f) for f in source.features], quote_ident(source.label),
                data.task, source.array_feature, data.validation_fraction, segments,
                settings["buffer_rows"], seed, table,
            )
            stats = json.loads(stats_text)
            await conn.execute(template("pack_insert.sql"), digest, source.display_name, source.fingerprint,
                               json.dumps(settings), table, stats_text)
    except asyncpg.exceptions.PostgresError as exc:
        if exc.sqlstate == SQLSTATE_DATA:
            raise DataError(f"data: {exc.message}") from exc
        raise
    return Pack(digest, table, stats, reused=False)

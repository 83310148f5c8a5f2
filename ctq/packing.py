"""Data checks and packing: the source table becomes per-segment float32 buffers, once.

Checks run read-only before anything is written (missing table or column, non-numeric types,
NULLs, NaN or infinite values, a label with one class), in one scan that also yields the
normalisation statistics of the training rows and a content fingerprint. Packing is then plain
SQL run by the database's own processes (on PostgreSQL, several connections each building some
virtual segments; on Greenplum, every segment packing its own rows): no row travels through the
client or a single Python process, and memory is bounded by one buffer, not by the table.

A pack is keyed by the source's content fingerprint and the packing settings: an unchanged source
is never packed twice, a changed one gets a new pack (and the in-database caches, keyed by the
pack id, follow). The row's seeded key (engine.row_key) makes the shuffle, the validation split
and the segment assignment reproducible.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass

import asyncpg

from ctq.config import DataConfig
from ctq.engines.base import VALIDATION_MODULUS, Engine, PackSpec
from ctq.errors import DataError, PermissionDenied
from ctq.indb import SQLSTATE_DATA
from ctq.sql import qualified, quote_ident, render, template

DEFAULT_BUFFER_BYTES = 4 << 20  # ~4 MiB of float32 features per buffer row
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Source:
    """A source table resolved against the catalog, with its columns checked and profiled."""

    oid: int
    schema: str
    name: str
    is_table: bool
    features: tuple[str, ...]
    label: str
    label_category: str  # N numeric, B boolean, S text (classification: the class values are strings)
    array_feature: bool
    rows: int
    train_rows: int
    fingerprint: str
    width: int  # number of input features (the array length for an array column)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_values: tuple | None  # classification: sorted class values (numbers, or strings for text)
    profile_seconds: float
    class_counts: tuple[int, ...] | None = None  # rows per class (all rows), in class_values order
    target_mean: float = 0.0  # regression: the training rows' label mean and standard deviation
    target_std: float = 1.0
    label_type: str = ""  # the label column's SQL type (format_type), e.g. integer, boolean, text

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
    seconds: float = 0.0  # time spent packing (0 when reused)


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


async def inspect_source(conn: asyncpg.Connection, data: DataConfig, engine: Engine, seed: int) -> Source:
    """Resolve, check and profile the source (read-only); raises DataError naming the table or
    column at fault. ``seed`` and ``data.validation_fraction`` decide which rows are training rows,
    whose mean and standard deviation normalise the features."""
    started = time.perf_counter()
    rel = await _find_relation(conn, data.schema, data.name)
    if rel is None:
        raise DataError(f"data.table: table {data.table!r} does not exist (or is not visible to this user)")
    if not await conn.fetchval("SELECT has_table_privilege($1::oid, 'SELECT')", rel["oid"]):
        user = await conn.fetchval("SELECT current_user")
        name = qualified(rel["schema"], rel["name"])
        raise PermissionDenied(f"role {user} has no SELECT privilege on {rel['schema']}.{rel['name']} (data.table); "
                               f"ask its owner or an administrator to run: GRANT SELECT ON {name} TO "
                               f"{quote_ident(user)}")
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
    if label["category"] not in ("N", "B", "S"):
        raise DataError(f"data.label: column {label['name']!r} has type {label['type']}: use a number, a "
                        "boolean or text (class values)")
    if label["category"] != "N" and data.task != "classification":
        raise DataError(f"data.label: column {label['name']!r} has type {label['type']}, not a number; "
                        "use task: classification (its values are the classes)")
    if label["name"] in {c["name"] for c in features}:
        raise DataError(f"data.label: column {label['name']!r} is also listed as a feature")
    is_table = rel["relkind"] in ("r", "p")
    source_sql = qualified(rel["schema"], rel["name"])
    label_sql = _label_number(quote_ident(label["name"]), label["category"])
    scalar = [] if array_feature else [quote_ident(c["name"]) for c in features]
    cut = round(data.validation_fraction * VALIDATION_MODULUS)
    if engine.template("profile_session.sql").strip():
        await conn.execute(engine.template("profile_session.sql"))
    # fetch, not fetchrow: a portal run with a row limit (fetchrow) never gets a parallel plan
    (profile,) = await conn.fetch(render(
        "source_profile.sql", engine.name,
        counts=", ".join(f"count({quote_ident(c['name'])})" for c in features + [label]),
        mins=", ".join([f"min({q})" for q in scalar] + [f"min({label_sql})"]),
        maxs=", ".join([f"max({q})" for q in scalar] + [f"max({label_sql})"]),  # (NULL for a text label)
        means=", ".join(f"avg({q}) FILTER (WHERE NOT t.ctq_validation)" for q in scalar) or "0",
        variances=", ".join(f"var_pop({q}) FILTER (WHERE NOT t.ctq_validation)" for q in scalar) or "0",
        label=label_sql, source=source_sql, key=engine.row_key("s", seed, is_table),
        version=engine.row_version("s", is_table), modulus=VALIDATION_MODULUS, cut=cut,
    ))
    n = profile["n"]
    if n == 0:
        raise DataError(f"data.table: table {data.table!r} has no rows")
    names = [c["name"] for c in features] + [label["name"]]
    for name, count in zip(names, profile["counts"]):
        key = "data.label" if name == label["name"] else "data.features"
        if count < n:
            raise DataError(f"{key}: column {name!r} has {n - count} NULL value(s) of {n} rows; "
                            "filter or impute them (e.g. a view) before training")
    checked = [] if array_feature else [c["name"] for c in features]
    for name, lo, hi in zip(checked + [label["name"]], profile["mins"], profile["maxs"]):
        if lo is not None and not (math.isfinite(lo) and math.isfinite(hi)):
            key = "data.label" if name == label["name"] else "data.features"
            raise DataError(f"{key}: column {name!r} has NaN or infinite values")
    if profile["train_rows"] == 0:
        raise DataError(f"data.validation_fraction: {data.validation_fraction} leaves no training rows "
                        f"of {n}")
    width = len(features)
    if array_feature:
        width, mean, std = await _array_profile(conn, engine, source_sql, quote_ident(features[0]["name"]),
                                                is_table, seed, cut, n)
    else:
        mean = [float(v) for v in profile["means"]]
        std = [math.sqrt(max(float(v), 0.0)) for v in profile["variances"]]
    std = [s if s > 0 else 1.0 for s in std]
    class_values = class_counts = None
    if data.task == "classification":
        if profile["label_fractional"]:
            raise DataError(f"data.label: column {label['name']!r} has non-integer values; classification "
                            "needs class ids (use task: regression for a continuous target)")
        class_sql = quote_ident(label["name"]) + "::text" if label["category"] == "S" else label_sql
        rows = await conn.fetch(render("label_values.sql", label=class_sql, source=source_sql, limit=MAX_CLASSES + 1))
        values, counts = [r["value"] for r in rows], [r["n"] for r in rows]
        if len(values) < 2:
            raise DataError(f"data.label: column {label['name']!r} has a single class; nothing to learn")
        if len(values) > MAX_CLASSES:
            raise DataError(f"data.label: column {label['name']!r} has more than {MAX_CLASSES} classes; "
                            "is it a continuous target (task: regression)?")
        class_values = tuple(values if label["category"] == "S" else (float(v) for v in values))
        class_counts = tuple(int(c) for c in counts)
    return Source(
        oid=rel["oid"], schema=rel["schema"], name=rel["name"], is_table=is_table,
        features=tuple(c["name"] for c in features), label=label["name"], label_category=label["category"],
        array_feature=array_feature, rows=n, train_rows=profile["train_rows"], fingerprint=profile["fingerprint"],
        width=width, mean=tuple(mean), std=tuple(std), class_values=class_values,
        profile_seconds=time.perf_counter() - started, class_counts=class_counts,
        target_mean=float(profile["label_mean"] or 0.0),
        target_std=math.sqrt(float(profile["label_var"] or 0.0)) or 1.0, label_type=label["type"],
    )


def _label_number(quoted: str, category: str) -> str:
    """The label as a float8 SQL expression (a boolean is class 0 or 1; text has no number)."""
    return {"B": f"{quoted}::int::float8", "S": "NULL::float8"}.get(category, f"{quoted}::float8")


def _sql_literal(value: str) -> str:
    """A string literal that means ``value`` whatever standard_conforming_strings says."""
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def label_bytes_sql(column: str, category: str, class_values) -> str:
    """SQL for the label's bytes in a buffer: big-endian float4 of the value, or, for text classes
    (``category`` "S"), of the class index (``label_encoding`` "index" in the pack's stats; a value
    that is not one of ``class_values`` gives NULL). ``column`` is quoted SQL, e.g. ``t."label"``."""
    if category == "S":
        cases = " ".join(f"WHEN {_sql_literal(v)} THEN {i}" for i, v in enumerate(class_values))
        return f"float4send((CASE {column}::text {cases} END)::float4)"
    return f"float4send(({_label_number(column, category)})::float4)"


def _label_bytes(source: Source) -> str:
    return label_bytes_sql("t." + quote_ident(source.label), source.label_category, source.class_values)


def feature_bytes_sql(features, stats: dict, alias: str = "t") -> str:
    """SQL for one row's features as the bytes a buffer holds (see ``indb.decode_features``): the
    columns ``features`` of the row ``alias`` as big-endian float4 (``float4send``), or, for an
    array column (``stats["x_layout"]`` "array"), its ``array_send`` as float4[]. Packing and
    scoring (``ctq predict``, ``ctq evaluate``) both call this, so a scored row is exactly what a
    trained row was. NULL when a feature is NULL."""
    if stats.get("x_layout") == "array":
        return f"array_send({alias}.{quote_ident(features[0])}::float4[])"
    return " || ".join(f"float4send({alias}.{quote_ident(f)}::float4)" for f in features)


async def _array_profile(conn, engine, source_sql, column, is_table, seed, cut, n):
    """Width and per-element training statistics of an array feature column; refuses ragged rows,
    NULL elements and non-finite values."""
    row = await conn.fetchrow(render("array_profile.sql", engine.name, column=column, source=source_sql,
                                     key=engine.row_key("s", seed, is_table), modulus=VALIDATION_MODULUS, cut=cut))
    name = column.strip('"').replace('""', '"')
    if row["min_width"] != row["max_width"] or not row["max_width"]:
        raise DataError(f"data.features[0]: array column {name!r} has rows of different lengths "
                        f"({row['min_width']} to {row['max_width']})")
    if row["null_elements"]:
        raise DataError(f"data.features[0]: array column {name!r} has NULL elements in {row['null_elements']} row(s)")
    if not (math.isfinite(row["lo"]) and math.isfinite(row["hi"])):
        raise DataError(f"data.features[0]: array column {name!r} has NaN or infinite values")
    mean = [float(v) for v in row["means"]]
    std = [math.sqrt(max(float(v), 0.0)) for v in row["variances"]]
    return int(row["max_width"]), mean, std


def buffer_count(rows: float, width: int, buffer_rows: int | None) -> int:
    """Buffers for ``rows`` rows: ``buffer_rows`` rows each, or about DEFAULT_BUFFER_BYTES each."""
    per_buffer = buffer_rows or max(1, DEFAULT_BUFFER_BYTES // (max(1, width) * 4))
    return max(1, math.ceil(rows / per_buffer))


def pack_settings(data: DataConfig, source: Source, segments: int, seed: int, engine: Engine) -> dict:
    return {
        "engine": engine.name,
        "task": data.task,
        "features": list(source.features),
        "label": source.label,
        "array_feature": source.array_feature,
        "validation_fraction": data.validation_fraction,
        "segments": segments,
        "seed": seed,
        "buffer_rows": data.buffer_rows,
        "layout": 4,  # SQL-built buffers, key-ordered and normalised (targets too) when decoded
    }


def pack_stats(source: Source, segments: int) -> dict:
    """What the in-database side needs to decode a pack (recorded in ctq.packs.stats)."""
    return {
        "rows": source.rows,
        "train_rows": source.train_rows,
        "validation_rows": source.rows - source.train_rows,
        "input_dim": source.width,
        "n_outputs": len(source.class_values) if source.class_values else 1,
        "class_values": list(source.class_values) if source.class_values else None,
        "label_encoding": "index" if source.label_category == "S" else "value",
        "class_counts": list(source.class_counts) if source.class_counts else None,
        "mean": list(source.mean),
        "std": list(source.std),
        "x_layout": "array" if source.array_feature else "float4",
        "segments": segments,
        # regression trains on standardised targets and reports losses in the target's units
        "target_mean": None if source.class_values else source.target_mean,
        "target_std": None if source.class_values else source.target_std,
        "label_type": source.label_type,  # predictions come back in this type (ctq predict)
    }


def pack_spec(data: DataConfig, source: Source, segments: int, seed: int, pack_id: str) -> PackSpec:
    x_bytes = feature_bytes_sql(source.features, pack_stats(source, segments))
    y_bytes = _label_bytes(source)
    validation_rows = source.rows - source.train_rows
    return PackSpec(
        pack_id=pack_id, table=qualified("ctq_data", f"pack_{pack_id}"), source=source.sql_name,
        is_table=source.is_table, x_bytes=x_bytes, y_bytes=y_bytes, seed=seed,
        validation_cut=round(data.validation_fraction * VALIDATION_MODULUS), segments=segments,
        buckets=buffer_count(source.train_rows / segments, source.width, data.buffer_rows),
        validation_buckets=buffer_count(validation_rows, source.width, data.buffer_rows),
    )


async def ensure_pack(conn: asyncpg.Connection, dsn: str, engine: Engine, data: DataConfig, source: Source,
                      segments: int, seed: int) -> Pack:
    """Return the pack for this source content + settings, creating it if needed.

    The ``ctq.packs`` row is written last: a pack is usable once it is there, and a packing that
    failed or was killed leaves at most a table without that row, dropped by the next attempt.
    Concurrent runs on the same source serialise on an advisory lock and share one pack.
    """
    settings = pack_settings(data, source, segments, seed, engine)
    digest = hashlib.sha256(
        json.dumps([source.display_name, source.fingerprint, settings], sort_keys=True).encode()
    ).hexdigest()[:16]
    found = await conn.fetchrow(engine.template("pack_find.sql"), digest)
    if found:
        await use_pack(conn, digest)
        return Pack(digest, found["table_name"], json.loads(found["stats"]), reused=True)
    spec = pack_spec(data, source, segments, seed, digest)
    started = time.perf_counter()
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", digest)
    try:
        found = await conn.fetchrow(engine.template("pack_find.sql"), digest)  # a concurrent run packed it
        if found:
            await use_pack(conn, digest)
            return Pack(digest, found["table_name"], json.loads(found["stats"]), reused=True)
        await conn.execute(f"DROP TABLE IF EXISTS {spec.table}")  # left by a packing that died
        await engine.create_pack(conn, spec)
        try:
            await engine.fill_pack(dsn, spec, workers=max(1, min(spec.buckets * segments + spec.validation_buckets,
                                                                os.cpu_count() or 1)))
            await engine.finish_pack(conn, spec)
            stats = pack_stats(source, segments)
            await conn.execute(template("pack_insert.sql"), digest, source.display_name, source.fingerprint,
                               json.dumps(settings), f"ctq_data.pack_{digest}", json.dumps(stats), source.schema,
                               source.name)
        except BaseException:
            await _drop_quietly(conn, spec.table)
            raise
    except asyncpg.exceptions.PostgresError as exc:
        if exc.sqlstate == SQLSTATE_DATA:
            raise DataError(f"data: {exc.message}") from exc
        raise
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", digest)
    return Pack(digest, f"ctq_data.pack_{digest}", stats, reused=False, seconds=time.perf_counter() - started)


async def use_pack(conn, pack_id: str) -> None:
    """Reading a pack someone else packed: ``ctq.use_pack`` grants SELECT on its table to this role,
    only if it can SELECT the pack's source (the check is the database's, see security.sql)."""
    await conn.fetchval("SELECT ctq.use_pack($1)", pack_id)


async def _drop_quietly(conn, table: str) -> None:
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass

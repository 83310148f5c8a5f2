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
from dataclasses import dataclass, replace

import asyncpg

from ctq import catalog
from ctq.config import DataConfig
from ctq.connection import Snapshot, connect
from ctq.engines.base import VALIDATION_MODULUS, Engine, PackSpec
from ctq.errors import DataError
from ctq.indb import SQLSTATE_DATA, input_shape
from ctq.rules import PackStats
from ctq.sql import BATCH_VALUES, column_batches, qualified, quote_ident, render, template, unbatch

DEFAULT_BUFFER_BYTES = 4 << 20  # ~4 MiB of float32 features per buffer row
MAX_CLASSES = 1000
# rows x largest magnitude of a column whose sum of squares (times its row count: Greenplum's
# variance) may overflow double precision (1.8e308 = (1.34e154)^2): packing._too_large
TOO_LARGE = 1e154
FLOAT32_MAX = 3.4028234663852886e38  # packs hold centred values as float32: _columns_beyond_float32
FLOAT8_RANGE = ("1.7e308", "2.3e-308")  # a numeric beyond these magnitudes has no float8 (but 0): as SQL numerics


def beyond_float8_sql(value: str) -> str:
    """SQL: whether the numeric ``value`` is beyond double precision's range either way (1e400, or
    1e-400, which PostgreSQL refuses to cast rather than round to 0)."""
    high, low = FLOAT8_RANGE
    return f"(abs({value}) > {high} OR abs({value}) < {low} AND {value} <> 0)"
HINT_CLASSES, HINT_ROWS_PER_CLASS = 20, 10  # Source.label_hint
FEW_VALIDATION_ROWS = 30  # Source.validation_hint
# datatype_mismatch, cannot_coerce, undefined_function: a source column's type that a packing
# expression cannot convert (the column check should have refused it first): the data's fault
TYPE_ERRORS = ("42804", "42846", "42883")
MAX_ONE_HOT = 100  # distinct values of a one_hot column (one input each); more: encoding: index
MAX_INDEX = 100_000  # distinct values of an index-encoded column (rows of an Embedding)


async def check_same_rows(dsn: str, engine, moment, relation: str, display: str, is_table: bool, where: str) -> None:
    """Refuse (DataError, exit 2) a view whose rows differ between two reads of one moment.

    A view has no row identity: its rows are keyed by their content (Engine.row_key), and the
    sessions a statement is split over (packing workers, scoring segments) each read it in a
    transaction of their own, of one exported snapshot, and take the rows whose key falls on
    them. A volatile column (random(), clock_timestamp(), gen_random_uuid()), or one of the
    reading transaction's time (now(): each session's transaction has its own), changes the keys
    between reads: rows were scored twice and others not, silently (a user trial: 10 predictions
    for 10 rows, 8 distinct ids, exit 0). Two reads of the view (the snapshot's session and a
    joined one) are compared: one more scan, for views only. ``relation``: its SQL name;
    ``where``: what the message names (the grid key or the option). Engines that read in one
    session (no exported snapshot) are not split: nothing to compare."""
    if is_table or moment.name is None:
        return
    sql = render("content_sum.sql", source=relation, key=engine.row_key("t", 0, False))
    first = await moment.conn.fetchval(sql)
    other = await connect(dsn, "ctq snapshot check")
    try:
        async with moment.joined(other):
            second = await other.fetchval(sql)
    finally:
        await other.close()
    if first != second:
        raise DataError(f"{where}: the rows of view {display} differ between two reads (a volatile column, e.g. "
                        "random() or clock_timestamp(), or the reading transaction's time, e.g. now()): ctq's "
                        "sessions each read a view and take their share of its rows by their content, so rows "
                        "would be read twice or not at all; materialise it first (CREATE TABLE ... AS SELECT "
                        f"* FROM {display}) and use that")


def metric_class_note(metric: str, class_values) -> str | None:
    """Which class a two-class run's precision, recall or F1 is of (the second class value, in
    the label column's sort order, which its collation decides: 'a' < 'B' under one, 'B' < 'a'
    under C, which turned a recall of the minority class into the majority's: a user trial).
    ``class_values``: the run's, as its pack records them."""
    kind = metric.removeprefix("val_")
    if kind not in ("precision", "recall", "f1") or not class_values or len(class_values) != 2:
        return None
    first, second = class_values
    return (f"metric: {metric} is that of class {second!r}, the second of the label's values ({first!r}, "
            f"{second!r}) in its column's sort order")


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
    class_values: tuple | None  # classification: sorted class values (integers, booleans, or strings for text)
    profile_seconds: float
    class_counts: tuple[int, ...] | None = None  # rows per class (all rows), in class_values order
    target_mean: float = 0.0  # regression: the training rows' label mean and standard deviation (else 0, 1)
    target_std: float = 1.0
    label_type: str = ""  # the label column's SQL type (format_type), e.g. integer, boolean, text
    # categorical features: column -> {"encoding": "one_hot" | "index", "values": [vocabulary, as text]}
    categories: dict | None = None
    feature_shape: tuple[int, ...] | None = None  # an array feature's rows reshaped (e.g. images)
    display: str = ""  # the name as SQL takes it, quoted where it must be (find_relation.sql)

    def label_hint(self) -> str | None:
        """What to tell a user whose classification label looks like a continuous target: more than
        ``HINT_CLASSES`` numeric classes with under ``HINT_ROWS_PER_CLASS`` rows each (sklearn's
        diabetes target: 214 classes in 442 rows). A hint, not a refusal: many classes can be right."""
        if not self.class_values or self.label_category == "S":
            return None
        classes = len(self.class_values)
        if classes <= HINT_CLASSES or self.rows / classes >= HINT_ROWS_PER_CLASS:
            return None
        return (f"data.label: {classes} classes in {self.rows} rows ({self.rows / classes:.1f} rows each) from the "
                f"numbers of column {self.label!r}: is it a continuous target (task: regression)?")

    def validation_hint(self, metric: str) -> str | None:
        """A run ranked on fewer than ``FEW_VALIDATION_ROWS`` validation rows: its leaderboard is
        decided by a handful of rows (a user trial's 1 row ranked models 1.0 and 0.0 silently)."""
        rows = self.rows - self.train_rows
        if not metric.startswith("val_") or not 0 < rows < FEW_VALIDATION_ROWS:
            return None
        return (f"data.validation_fraction: only {rows} validation row(s) rank the models on {metric} (one row "
                f"moves an accuracy by {1 / rows:.2g}); raise validation_fraction for a ranking to trust")

    def metric_hint(self, metric: str) -> str | None:
        return metric_class_note(metric, self.class_values)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example as a model takes it."""
        return tuple(self.feature_shape) if self.feature_shape else (self.width,)

    @property
    def index_size(self) -> int | None:
        """For index-encoded features, the rows an Embedding needs: the largest vocabulary + 1
        (index 0 is the unknown value); None otherwise."""
        return index_size(self.categories)

    @property
    def n_outputs(self) -> int:
        """A model's outputs: the classes, or 1 (regression)."""
        return len(self.class_values) if self.class_values else 1

    @property
    def model_io(self) -> tuple:
        """What a model's weights take from this source besides its layers: the shape of an example,
        the outputs, the rows of an Embedding (:meth:`index_size`)."""
        return self.input_shape, self.n_outputs, self.index_size

    @property
    def sql_name(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def display_name(self) -> str:
        return self.display or f"{self.schema}.{self.name}"


FLOAT64_RESOLUTION = 2.0 ** -52  # float8's relative resolution (its epsilon): a target is centred in float8


def index_size(categories: dict | None) -> int | None:
    """The rows an Embedding of the index-encoded categories (a profile's or a pack's) needs."""
    sizes = [len(c["values"]) for c in (categories or {}).values() if c["encoding"] == "index"]
    return max(sizes) + 1 if sizes else None


def packed_model_io(stats: PackStats) -> tuple:
    """:attr:`Source.model_io` of the source a pack was made from, from its statistics."""
    return input_shape(stats), int(stats.n_outputs), index_size(stats.categories)


@dataclass(frozen=True)
class Pack:
    pack_id: str
    table_name: str
    stats: PackStats
    reused: bool
    seconds: float = 0.0  # time spent packing (0 when reused)
    other: str | None = None  # a new pack: why the newest pack of the same content was not used (other_settings)


async def other_settings(conn, source, settings: dict, new: str) -> str | None:
    """Why a source packed before is packed again: the settings the newest pack of its very content
    differs in, e.g. ``pack 2e24... of the same rows has other settings: layout 5 (now 6)`` (an
    upgrade's first run packed an unchanged table again without a word: a user trial), or, with no
    pack of this content, that the newest pack of the source holds other rows (the table changed,
    or was loaded again: a new table of the same rows is other rows to its fingerprint). None where
    no pack of the source but ``new`` (the one just written) is visible."""
    if not await conn.fetchval(template("packs_readable.sql")):
        return None
    packs = [p for p in await conn.fetch(template("packs_of_content.sql"), source.schema, source.name,
                                         source.fingerprint) if p["pack_id"] != new]
    if not packs:
        older = await conn.fetchval(template("packs_of_source.sql"), source.schema, source.name, new)
        return (None if older is None else f"pack {older} of {source.display_name} holds other rows (the table has "
                "changed since, or was loaded again)")
    old = json.loads(packs[0]["settings"])
    differ = [f"{key} {json.dumps(old.get(key))} (now {json.dumps(value)})" for key, value in sorted(settings.items())
              if old.get(key) != value]
    return f"pack {packs[0]['pack_id']} of the same rows has other settings: {', '.join(differ)}" if differ else None


async def _find_relation(conn, schema: str | None, name: str):
    row = await conn.fetchrow(template("find_relation.sql"), schema, name)
    if row is None and name != name.lower():  # unquoted names in SQL fold to lower case
        row = await conn.fetchrow(template("find_relation.sql"), schema, name.lower())
    return row


async def _wait_for_the_source(conn: asyncpg.Connection, rel, log) -> None:
    """Take the read lock the check needs on table ``rel``, saying first (``log``) who holds it when
    another session does (an ALTER TABLE, a LOCK TABLE, a VACUUM FULL): ctq's sessions wait for
    locks without a timeout (a long transaction is no error), and a user trial's ctq train sat at
    "checking" with no word for as long as the lock was held. Kept to the end of the check's
    transaction, as its first read would keep it."""
    table = qualified(rel["schema"], rel["name"])
    try:
        async with conn.transaction():  # (a savepoint: the check's transaction goes on after a refusal)
            await conn.execute(render("source_lock.sql", source=table, wait="NOWAIT"))
        return
    except asyncpg.LockNotAvailableError:
        pass
    holder = await conn.fetchrow(template("source_lock_holder.sql"), rel["oid"])
    who = (f"pid {holder['pid']} ({holder['usename']}: {' '.join((holder['query'] or '').split())[:80]!r})"
           if holder else "another session")
    log(f"waiting for {rel['display']}, locked by {who}")
    await conn.execute(render("source_lock.sql", source=table, wait=""))


def find_column(columns: dict[str, dict], wanted: str) -> dict | None:
    """The column ``wanted`` names, as SQL takes a name: exactly, else its lower case (unquoted names
    fold to lower case), as a relation's name is found (:func:`_find_relation`); a name written in
    double quotes, as SQL quotes one (``"Key"``, ``""`` for a quote inside), exactly as quoted."""
    if len(wanted) > 1 and wanted[0] == wanted[-1] == '"' and '"' not in wanted[1:-1].replace('""', ""):
        return columns.get(wanted[1:-1].replace('""', '"'))
    return columns.get(wanted) or columns.get(wanted.lower())


def _match_column(wanted: str, columns: dict[str, dict], key: str) -> dict:
    col = find_column(columns, wanted)
    if col is None:
        available = ", ".join(sorted(columns)) or "(none)"
        raise DataError(f"{key}: column {wanted!r} does not exist in the source table (columns: {available})")
    return col


def null_columns(with_nulls: list[tuple[str, int]], rows: int) -> str:
    """Every column with NULLs, named in one message (one fix, not one run per column):
    ``with_nulls`` is [(column, NULL count)] of a table of ``rows`` rows."""
    shown = ", ".join(f"{name!r} ({missing})" for name, missing in with_nulls[:10])
    more = f" and {len(with_nulls) - 10} more" if len(with_nulls) > 10 else ""
    if len(with_nulls) == 1:
        name, missing = with_nulls[0]
        return f"column {name!r} has {missing} NULL value(s) of {rows} rows"
    return f"{len(with_nulls)} columns have NULL values (of {rows} rows): {shown}{more}"


async def inspect_source(conn: asyncpg.Connection, data: DataConfig, engine: Engine, seed: int,
                         reuse_profile: bool = True, log=None) -> Source:
    """Resolve, check and profile the source (read-only); raises DataError naming the table or
    column at fault. ``seed`` and ``data.validation_fraction`` decide which rows are training rows,
    whose mean and standard deviation normalise the features.

    ``reuse_profile``: the profile may come from a pack of the same content (reused_profile), which
    reads ctq.packs. False where ctq is to be installed or upgraded while ``conn``'s transaction
    (the snapshot the check and the packing share) is open: a read of ctq.packs in it would hold a
    lock the upgrade's DDL waits for, while the client waits for the upgrade (a run that never
    starts)."""
    started = time.perf_counter()
    rel = await _find_relation(conn, data.schema, data.name)
    if rel is None:
        raise DataError(f"data.table: table {data.table!r} does not exist (or is not visible to this user)")
    await catalog.require_select(conn, rel, "data.table")
    if log is not None and rel["relkind"] in ("r", "p"):
        await _wait_for_the_source(conn, rel, log)
    columns = {r["name"]: dict(r) for r in await conn.fetch(template("source_columns.sql"), rel["oid"])}
    label = _match_column(data.label, columns, "data.label")
    wanted = list(data.features)
    if data.all_features:  # every column but the label and data.exclude, in the table's order
        left_out = {_match_column(c, columns, f"data.exclude[{i}]")["name"] for i, c in enumerate(data.exclude)}
        wanted = [name for name in columns if name != label["name"] and name not in left_out]
        if not wanted:
            raise DataError(f"data.features: {data.table!r} has no column left but the label and data.exclude")
    features = [_match_column(f, columns, f"data.features[{i}]") for i, f in enumerate(wanted)]
    seen: dict[str, int] = {}
    for i, col in enumerate(features):  # as the database resolves them: [f1, F1] is f1 twice
        if (first := seen.setdefault(col["name"], i)) != i:
            raise DataError(f"data.features[{i}]: {wanted[i]!r} is column {col['name']!r} again "
                            f"(data.features[{first}]); each feature once")
    encodings = {c["name"]: data.encoding(f) for f, c in zip(wanted, features) if data.encoding(f)}
    array_feature = len(features) == 1 and features[0]["category"] == "A" and not encodings
    refused = []  # (index, column) of every feature that is not a number: all named at once
    for i, col in enumerate(features):
        if col["name"] in encodings:
            if col["category"] == "A":
                raise DataError(f"data.features[{i}]: column {col['name']!r} has type {col['type']}; a "
                                "categorical column holds one value per row (text, integer codes, boolean)")
            continue
        numeric = col["category"] == "N" or (array_feature and col["element_category"] == "N")
        if "X" in (col["category"], col["element_category"]):
            raise DataError(f"data.features[{i}]: {unreadable_number(col)}")
        if col["category"] == "A" and col["element_category"] == "N" and not (array_feature or data.all_features):
            raise DataError(f"data.features[{i}]: column {col['name']!r} has type {col['type']}: an array column "
                            f"must be the only feature (features: [{col['name']}]), as one row's input; "
                            "or unnest it into columns in a view")
        if not numeric:
            refused.append((i, col))
    if refused:
        fix = ("with features: all, add " + ("it" if len(refused) == 1 else "them") + " to data.exclude, or list "
               "the features" if data.all_features else
               "features must be numeric columns, or a single real[]/float8[] column; a text or code column "
               "can be written {column: name, encoding: one_hot}")
        if len(refused) == 1:
            (i, col), = refused
            raise DataError(f"data.features[{i}]: column {col['name']!r} has type {col['type']}, not a number ({fix})")
        named = ", ".join(f"{col['name']!r} ({col['type']})" for _, col in refused[:20])
        more = f" and {len(refused) - 20} more" if len(refused) > 20 else ""
        raise DataError(f"data.features: {len(refused)} columns are not numbers: {named}{more} ({fix})")
    if data.feature_shape and not array_feature:
        raise DataError(f"data.feature_shape: column {features[0]['name']!r} has type {features[0]['type']}; "
                        "feature_shape needs a real[]/float8[] column")
    if label["category"] == "X":
        raise DataError(f"data.label: {unreadable_number(label)}")
    if label["category"] != "N" and data.task != "classification":
        raise DataError(f"data.label: column {label['name']!r} has type {label['type']}, not a number; a "
                        f"{data.task} target is a number"
                        + ("; or use task: classification (its values are the classes)"
                           if label["category"] in ("B", "S") else ""))
    if label["category"] not in ("N", "B", "S"):
        cast = (f"; cast it in a view, e.g. {quote_ident(label['name'])}::text" if label["category"] == "E" else "")
        raise DataError(f"data.label: column {label['name']!r} has type {label['type']}: use a number, a "
                        f"boolean or text (class values){cast}")
    if label["name"] in {c["name"] for c in features}:
        raise DataError(f"data.label: column {label['name']!r} is also listed as a feature")
    is_table = rel["relkind"] in ("r", "p")
    source_sql = qualified(rel["schema"], rel["name"])
    label_sql = _label_number(quote_ident(label["name"]), label["category"])
    reused = await reused_profile(conn, engine, rel, is_table, data, features, label, array_feature, seed,
                                  started) if reuse_profile else None
    if reused is not None:
        return reused
    profiled = [c for c in features if c["name"] not in encodings]  # a categorical column may be NULL
    cut = round(data.validation_fraction * VALIDATION_MODULUS)
    if engine.template("profile_session.sql").strip():
        await conn.execute(engine.template("profile_session.sql"))
    sql, n_values = await profile_sql(conn, engine, source_sql, [c["name"] for c in profiled], label, array_feature,
                                      seed, is_table, cut)
    try:
        async with conn.transaction():  # (a savepoint: the moment's transaction goes on after an overflow)
            rows = await conn.fetch(sql)  # fetch, not fetchrow: a portal with a row limit never gets a parallel plan
    except asyncpg.NumericValueOutOfRangeError:
        numeric = [] if array_feature else profiled
        raise DataError(await _too_large(conn, source_sql, numeric + [label] * (label["category"] == "N"),
                                         label["name"])) from None
    if not rows:  # (grouped by batch: no rows, no groups)
        raise DataError(f"data.table: table {data.table!r} has no rows")
    profile = next(r for r in rows if r["ctq_batch"] == 0)
    counts, finite, means, variances = (unbatch(rows, k, n_values) for k in ("counts", "finite", "means", "variances"))
    n = profile["n"]
    with_nulls = [(name, n - count) for name, count in zip([c["name"] for c in profiled] + [label["name"]],
                                                           counts[:-1] + [profile["label_count"]]) if count < n]
    checked = [] if array_feature else [c["name"] for c in profiled]  # (an array's elements: _array_profile)
    not_finite = [name for name, ok in zip(checked + [label["name"]], finite[-len(checked) - 1:]) if ok is False]
    if with_nulls or not_finite:  # every column at fault in one message: one fix, not one run per column
        key = fault_key([name for name, _ in with_nulls] + not_finite, label["name"])
        faults = [null_columns(with_nulls, n)] if with_nulls else []
        if not_finite:
            faults.append(f"column {not_finite[0]!r} has NaN or infinite values" if len(not_finite) == 1 else
                          f"{len(not_finite)} columns have NaN or infinite values: "
                          + ", ".join(repr(name) for name in not_finite[:10])
                          + (f" and {len(not_finite) - 10} more" if len(not_finite) > 10 else ""))
        raise DataError(f"{key}: {'; '.join(faults)}; filter or impute them (e.g. a view) before training")
    if profile["train_rows"] == 0:
        raise DataError(f"data.validation_fraction: {data.validation_fraction} leaves no training rows "
                        f"of {n}")
    width = len(features)
    categories = None
    centred = []  # (name, training mean, std) of the numeric values a pack holds centred, as float32
    if array_feature:
        width, mean, std = await _array_profile(conn, engine, source_sql, quote_ident(features[0]["name"]),
                                                is_table, seed, cut, n, data.feature_shape)
    else:
        categories = await _vocabularies(conn, source_sql, features, encodings)
        numeric = iter(zip(means, variances))
        mean, std = [], []
        for col in features:
            category = (categories or {}).get(col["name"])
            if category is None:
                m, v = next(numeric)
                mean.append(float(m))
                std.append(math.sqrt(max(float(v), 0.0)))
                centred.append((col["name"], mean[-1], std[-1]))
            else:  # encoded positions are not normalised
                positions = len(category["values"]) if category["encoding"] == "one_hot" else 1
                mean += [0.0] * positions
                std += [1.0] * positions
        width = len(mean)
    # a value beyond float32's range once centred failed the packing, naming no column (a user
    # trial): the sum of its squares must then pass 3.4e38 squared, so only such columns are read
    if data.task == "regression":
        centred.append((label["name"], float(means[-1] or 0.0), math.sqrt(max(float(variances[-1] or 0), 0))))
    suspects = [(name, m) for name, m, s in centred if (s * s + m * m) * n > FLOAT32_MAX ** 2]
    if suspects and (found := await _columns_beyond_float32(conn, source_sql, suspects)):
        raise DataError(beyond_float32(found, label["name"]))
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
        # in the label's own kind (text, true/false, whole numbers: classification labels are integral)
        class_values = tuple(values if label["category"] == "S" else
                             (bool(v) if label["category"] == "B" else int(v) for v in values))
        class_counts = tuple(int(c) for c in counts)
    elif math.sqrt(max(float(variances[-1] or 0.0), 0.0)) <= FLOAT64_RESOLUTION * abs(float(means[-1] or 0.0)):
        # as a single class is: a target that every training row has the same (a spread below
        # float8's resolution of its mean is lost when it is centred: PackStats.centred)
        raise DataError(f"data.label: column {label['name']!r} has the same value in every training row; "
                        "nothing to learn")
    return Source(
        oid=rel["oid"], schema=rel["schema"], name=rel["name"], is_table=is_table,
        features=tuple(c["name"] for c in features), label=label["name"], label_category=label["category"],
        array_feature=array_feature, rows=n, train_rows=profile["train_rows"], fingerprint=profile["fingerprint"],
        width=width, mean=tuple(mean), std=tuple(std), class_values=class_values,
        profile_seconds=time.perf_counter() - started, class_counts=class_counts,
        target_mean=float(means[-1] or 0.0) if class_values is None else 0.0,
        target_std=(math.sqrt(float(variances[-1] or 0.0)) or 1.0) if class_values is None else 1.0,
        label_type=label["type"],
        categories=categories, feature_shape=data.feature_shape, display=rel["display"],
    )


async def content_fingerprint(conn, engine: Engine, rel) -> str:
    """The content fingerprint of relation ``rel`` (find_relation.sql's row), one scan, as the
    source profile computes it (source_fingerprint.sql)."""
    return await conn.fetchval(render("source_fingerprint.sql", engine.name, version=engine.row_version(
        "s", rel["relkind"] in ("r", "p")), source=qualified(rel["schema"], rel["name"])))


async def reused_profile(conn, engine: Engine, rel, is_table: bool, data: DataConfig, features: list[dict],
                          label: dict, array_feature: bool, seed: int, started: float) -> Source | None:
    """The source's profile as a pack of its very content recorded it, or None (ctq not installed,
    or no such pack visible to the caller): a re-run on an unchanged source (a nightly grid)
    scans it for its fingerprint only (source_fingerprint.sql: 1M x 32 in 0.25 s against the
    profile's 1.6 s on PostgreSQL, 0.7 s against 2.3 s on Greenplum). A pack was made from a
    source that passed every check of its content; the same content with the same profile
    settings (profile_settings) passes them again with the same statistics. A pack whose
    statistics lack what a profile gives (packed by an earlier ctq) does not count."""
    if not await conn.fetchval(template("packs_readable.sql")):
        return None
    fingerprint = await content_fingerprint(conn, engine, rel)
    wanted = profile_settings(data, tuple(c["name"] for c in features), label["name"], array_feature, seed, engine)
    for pack in await conn.fetch(template("packs_of_content.sql"), rel["schema"], rel["name"], fingerprint):
        settings = json.loads(pack["settings"])
        if any(settings.get(key) != value for key, value in wanted.items()):
            continue
        stats = PackStats.from_dict(json.loads(pack["stats"]))
        if not stats.label_type or (data.task == "classification") != bool(stats.class_values) or (
                stats.class_values and not stats.class_counts):
            continue
        return Source(
            oid=rel["oid"], schema=rel["schema"], name=rel["name"], is_table=is_table,
            features=tuple(c["name"] for c in features), label=label["name"], label_category=label["category"],
            array_feature=array_feature, rows=stats.rows, train_rows=stats.train_rows, fingerprint=fingerprint,
            width=stats.input_dim, mean=tuple(stats.mean), std=tuple(stats.std),
            class_values=tuple(stats.class_values) if stats.class_values else None,
            profile_seconds=time.perf_counter() - started,
            class_counts=tuple(stats.class_counts) if stats.class_counts else None,
            target_mean=stats.target_mean or 0.0, target_std=stats.target_std or 1.0, label_type=stats.label_type,
            categories=stats.categories, feature_shape=data.feature_shape, display=rel["display"])
    return None


async def profile_sql(conn: asyncpg.Connection, engine: Engine, source_sql: str, columns: list[str], label: dict,
                      array_feature: bool, seed: int, is_table: bool, cut: int) -> tuple[str, int]:
    """The source profile statement (source_profile.sql) and its number of profiled values: each
    of ``columns`` (numeric features; of an array column only whether it is NULL, its elements are
    _array_profile's), then the label as a number. Batched (sql.column_batches), so that it is one
    scan of a fixed width at any number of columns."""
    values = [f"(CASE WHEN t.{quote_ident(c)} IS NOT NULL THEN 0 END)::float8" if array_feature
              else f"t.{quote_ident(c)}::float8" for c in columns]
    values.append(_label_number("t." + quote_ident(label["name"]), label["category"]))
    batches, slots, outer = column_batches(values, source_sql, engine.name, [quote_ident(label["name"])], per_row={
        "ctq_validation": f"abs(({engine.row_key('t', seed, is_table)}) % {VALIDATION_MODULUS}) < {int(cut)}",
        "ctq_version": engine.row_version("t", is_table)})
    label_column = f"{outer}.{quote_ident(label['name'])}"
    return await engine.profile_statement(conn, [f"c.ctq_{i}" for i in range(1, slots + 1)], batches=batches,
                                          label=_label_number(label_column, label["category"]),
                                          label_column=label_column), len(values)


async def _vocabularies(conn, source_sql: str, features: list[dict], encodings: dict) -> dict | None:
    """The vocabulary of each categorical feature column, computed by the database (one statement,
    a grouping query per column): its distinct non-NULL values as text, in the column's order.
    Refuses a one_hot column with more than MAX_ONE_HOT values (an index column: MAX_INDEX) or none."""
    wanted = {i: (col, encodings[col["name"]]) for i, col in enumerate(features) if col["name"] in encodings}
    if not wanted:
        return None
    caps = {i: MAX_ONE_HOT if encoding == "one_hot" else MAX_INDEX for i, (_, encoding) in wanted.items()}
    rows = await conn.fetch("\nUNION ALL\n".join(
        render("category_values.sql", feature=i, column=quote_ident(col["name"]), source=source_sql,
               limit=caps[i] + 1) for i, (col, _) in wanted.items()))
    found: dict[int, list] = {i: [] for i in wanted}
    for r in rows:
        found[r["feature"]].append(r)
    out = {}
    for i, (col, encoding) in wanted.items():
        values = sorted(found[i], key=lambda r: r["position"])
        if not values:
            raise DataError(f"data.features[{i}]: categorical column {col['name']!r} has only NULL values")
        if values[0]["distinct_values"] > caps[i]:
            hint = ("; use {column: %s, encoding: index} with an Embedding model" % col["name"]
                    if encoding == "one_hot" else "; is it an identifier rather than a category?")
            raise DataError(f"data.features[{i}]: column {col['name']!r} has {values[0]['distinct_values']} "
                            f"distinct values, more than encoding: {encoding} allows ({caps[i]}){hint}")
        out[col["name"]] = {"encoding": encoding, "values": [r["value"] for r in values]}
    return out


async def _too_large(conn, source_sql: str, columns: list[dict], label: str) -> str:
    """Why the profile overflowed (numeric ``columns``, source_columns.sql's rows), naming the
    columns at fault: a numeric value beyond double precision's range either way (1e400, or
    1e-400, which PostgreSQL refuses to cast rather than round to 0), or a column whose rows x
    largest magnitude pass TOO_LARGE, where the variance's sum of squares (and, on Greenplum, its
    product with the row count) passes double precision's 1.8e308. The numeric columns are
    compared as numeric, so that this check cannot overflow as the profile did (it did, and the
    user read PostgreSQL's 401-digit number without a column name: a user trial)."""
    found, beyond = [], []
    for start in range(0, len(columns), BATCH_VALUES // 2):  # (a statement's target list: 1,664 entries)
        part = columns[start:start + BATCH_VALUES // 2]
        checks = []
        for c in part:
            q = f"t.{quote_ident(c['name'])}"
            if c.get("base_type") == "numeric":
                checks += [f"coalesce(bool_or({beyond_float8_sql(q)}), false)",
                           f"coalesce(max(abs({q})) * count({q}) > {TOO_LARGE:g}, false)"]
            else:
                checks += ["false", f"coalesce(max(abs({q}::float8)) * count({q}) > {TOO_LARGE:g}, false)"]
        row = await conn.fetchval(render("too_large.sql", source=source_sql, checks=", ".join(checks)))
        beyond += [c["name"] for c, hit in zip(part, row[0::2]) if hit]
        found += [c["name"] for c, hit in zip(part, row[1::2]) if hit]

    def named(names: list[str]) -> tuple[str, str]:
        return fault_key(names, label), columns_have(names)

    if beyond:
        key, where = named(beyond)
        return (f"{key}: {where} values beyond double precision's range (magnitudes over {FLOAT8_RANGE[0]} or "
                f"under {FLOAT8_RANGE[1]} but 0); round or scale them in a view")
    if not found:
        return ("data: a feature or the label has values too large to normalise (the sum of their squares overflows "
                "double precision); scale them in a view")
    key, where = named(found)
    return (f"{key}: {where} values too large to normalise (the sum of their squares overflows double precision); "
            "scale them in a view")


def unreadable_number(col: dict) -> str:
    """Why a column of a numeric type ctq cannot read (category X in source_columns.sql) is
    refused, and the fix."""
    return (f"column {col['name']!r} has type {col['type']}, which ctq cannot read as a number "
            "(it reads smallint, integer, bigint, real, double precision and numeric, or arrays of them); "
            f"cast it in a view, e.g. {quote_ident(col['name'])}::numeric")


def _label_number(quoted: str, category: str) -> str:
    """The label as a float8 SQL expression (a boolean is class 0 or 1; text has no number)."""
    return {"B": f"{quoted}::int::float8", "S": "NULL::float8"}.get(category, f"{quoted}::float8")


def _sql_literal(value: str) -> str:
    """A string literal that means ``value`` whatever standard_conforming_strings says."""
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def centring(features, stats: PackStats) -> dict[str, float]:
    """What each numeric feature (not categorical) is less before its float4 cast: its mean in a
    ``centred`` pack (PackStats.centred), else 0."""
    categories = stats.categories or {}
    centres, at = {}, 0  # at: the column's first value in stats.mean
    for name in features:
        category = categories.get(name)
        if category is None:
            centres[name] = float(stats.mean[at]) if stats.centred else 0.0
            at += 1
        else:
            at += len(category["values"]) if category["encoding"] == "one_hot" else 1
    return centres


def feature_bytes_sql(features, stats: PackStats, alias: str = "t") -> str:
    """SQL for one source row's feature bytes in a buffer, driven by the pack's stats only (so
    packing and prediction encode rows alike): big-endian float4 per numeric column, or
    ``array_send`` of an array column (``x_layout`` "array"). A categorical column
    (``stats.categories``) is looked up in its recorded vocabulary (a jsonb value -> position
    map: a binary search, not a chain of comparisons): ``one_hot`` gives one float4 per value, 1.0
    at the value's position; ``index`` gives the float4 position + 1. A value not in the
    vocabulary (unseen when the pack was made, or NULL) is the unknown value: all zeros, index 0.

    Packing and scoring (``ctq predict``, ``ctq evaluate``) both call this, so a scored row is
    exactly what a trained row was. NULL when a numeric feature is NULL. A numeric column of a
    ``centred`` pack is sent less its mean, subtracted in float8 (PackStats.centred).

    ``features``: the feature column names, in order (the pack's settings); ``alias``: the
    source row's alias in the query."""
    if stats.x_layout == "array":
        return f"array_send({alias}.{quote_ident(features[0])}::float4[])"
    categories = stats.categories or {}
    centres = centring(features, stats)
    parts = []
    for name in features:
        column = f"{alias}.{quote_ident(name)}"
        category = categories.get(name)
        if category is None:
            mean = centres[name]
            parts.append(f"float4send(({column}::float8 - {mean!r}::float8)::float4)" if mean
                         else f"float4send({column}::float4)")
            continue
        positions = _sql_literal(json.dumps({v: i for i, v in enumerate(category["values"])}, sort_keys=True))
        position = f"({positions}::jsonb ->> ({column})::text)::int"
        if category["encoding"] == "index":
            parts.append(f"float4send(coalesce({position} + 1, 0)::float4)")
        else:
            zeros = f"decode(repeat('00', {4 * len(category['values'])}), 'hex')"
            parts.append(f"coalesce(overlay({zeros} placing decode('3f800000', 'hex') from 4 * {position} + 1 for 4), "
                         f"{zeros})")
    return _concatenation(parts)


def _concatenation(parts: list[str]) -> str:
    """``a || b || c ...`` as a balanced tree of parenthesised halves: the server parses and
    evaluates an expression recursively, and a chain of 1,600 ``||`` is 1,600 levels deep (near
    max_stack_depth); the tree is 11."""
    if len(parts) <= 8:
        return " || ".join(parts)
    half = len(parts) // 2
    return f"({_concatenation(parts[:half])}) || ({_concatenation(parts[half:])})"


def label_bytes_sql(column: str, category: str, class_values, offset: float = 0.0) -> str:
    """SQL for the label's bytes in a buffer: big-endian float4 of the value, or, for text classes
    (``category`` "S"), of the class index (``label_encoding`` "index" in the pack's stats; a value
    that is not one of ``class_values`` gives NULL); a regression target less ``offset`` (its mean,
    subtracted in float8: PackStats.centred). ``column`` is quoted SQL, e.g. ``t."label"``."""
    if category == "S":
        cases = " ".join(f"WHEN {_sql_literal(v)} THEN {i}" for i, v in enumerate(class_values))
        return f"float4send((CASE {column}::text {cases} END)::float4)"
    if offset:
        return f"float4send((({_label_number(column, category)}) - {float(offset)!r}::float8)::float4)"
    return f"float4send(({_label_number(column, category)})::float4)"


def target_offset(stats: PackStats) -> float:
    """What a pack with ``stats`` subtracted from the target in SQL (label_bytes_sql)."""
    return float(stats.target_mean or 0.0) if stats.centred and stats.class_values is None else 0.0


async def _array_profile(conn, engine, source_sql, column, is_table, seed, cut, n, shape=None):
    """Width and per-element training statistics of an array feature column; refuses arrays of more
    than one dimension, ragged rows, NULL elements, non-finite values and a length that is not the
    product of ``shape``.

    With a ``shape`` (images), the statistics are global, the same mean and standard deviation at
    every position, as CNN inputs are usually scaled: per-position scaling would blank constant
    borders and change the picture's contrast from pixel to pixel."""
    row = await conn.fetchrow(render("array_profile.sql", engine.name, column=column, source=source_sql,
                                     key=engine.row_key("s", seed, is_table), modulus=VALIDATION_MODULUS, cut=cut))
    name = column.strip('"').replace('""', '"')
    if (row["max_dims"] or 1) > 1:  # packed as array_send writes it: one dimension's header (decode_features)
        raise DataError(f"data.features[0]: array column {name!r} holds {row['max_dims']}-dimensional arrays; ctq "
                        "reads one-dimensional ones: flatten it (ARRAY(SELECT unnest(column))) and give the "
                        "shape as data.feature_shape")
    if row["min_width"] != row["max_width"] or not row["max_width"]:
        raise DataError(f"data.features[0]: array column {name!r} has rows of different lengths "
                        f"({row['min_width']} to {row['max_width']})")
    if row["null_elements"]:
        raise DataError(f"data.features[0]: array column {name!r} has NULL elements in {row['null_elements']} row(s)")
    if not (math.isfinite(row["lo"]) and math.isfinite(row["hi"])):
        raise DataError(f"data.features[0]: array column {name!r} has NaN or infinite values")
    width = int(row["max_width"])
    if shape and math.prod(shape) != width:
        raise DataError(f"data.feature_shape: array column {name!r} has {width} values per row, but feature_shape "
                        f"{list(shape)} holds {math.prod(shape)}")
    mean = [float(v) for v in row["means"]]
    variances = [max(float(v), 0.0) for v in row["variances"]]
    if shape:  # every position counts the same training rows: pool the per-position moments
        overall = sum(mean) / width
        pooled = sum(v + m * m for v, m in zip(variances, mean)) / width - overall * overall
        mean, variances = [overall] * width, [max(pooled, 0.0)] * width
    return width, mean, [math.sqrt(v) for v in variances]


def buffer_count(rows: float, width: int, buffer_rows: int | None) -> int:
    """Buffers for ``rows`` rows: ``buffer_rows`` rows each, or about DEFAULT_BUFFER_BYTES each."""
    per_buffer = buffer_rows or max(1, DEFAULT_BUFFER_BYTES // (max(1, width) * 4))
    return max(1, math.ceil(rows / per_buffer))


def profile_settings(data: DataConfig, features: tuple[str, ...], label: str, array_feature: bool, seed: int,
                     engine: Engine) -> dict:
    """The settings a source's profile follows from, beside its content: a pack of the same
    content packed with the same ones holds that profile in its statistics (reused_profile)."""
    return {
        "engine": engine.name,
        "task": data.task,
        "features": list(features),
        "label": label,
        "array_feature": array_feature,
        "validation_fraction": data.validation_fraction,
        "seed": seed,
        # SQL-built buffers, key-ordered and normalised (targets too) when decoded; categories
        # encoded; numeric values centred in float8 before the float4 cast (PackStats.centred)
        "layout": 6,
        "encodings": [list(e) for e in data.encodings],
        "feature_shape": list(data.feature_shape) if data.feature_shape else None,
    }


def pack_settings(data: DataConfig, source: Source, segments: int, seed: int, engine: Engine) -> dict:
    return {
        **profile_settings(data, source.features, source.label, source.array_feature, seed, engine),
        "segments": segments,
        "buffer_rows": data.buffer_rows,
        # the vocabularies follow from the source's content (fingerprinted), recorded here to key them explicitly
        "vocabularies": hashlib.sha256(json.dumps(source.categories, sort_keys=True).encode()).hexdigest()[:16]
        if source.categories else None,
    }


def pack_stats(source: Source, segments: int) -> PackStats:
    """What the in-database side needs to decode a pack (recorded in ctq.packs.stats)."""
    return PackStats(
        rows=source.rows,
        train_rows=source.train_rows,
        validation_rows=source.rows - source.train_rows,
        input_dim=source.width,
        n_outputs=source.n_outputs,
        class_values=list(source.class_values) if source.class_values else None,
        label_encoding="index" if source.label_category == "S" else "value",
        class_counts=list(source.class_counts) if source.class_counts else None,
        mean=list(source.mean),
        std=list(source.std),
        x_layout="array" if source.array_feature else "float4",
        categories=source.categories,  # column -> {encoding, values}: see feature_bytes_sql
        feature_shape=list(source.feature_shape) if source.feature_shape else None,
        segments=segments,
        # regression trains on standardised targets and reports losses in the target's units
        target_mean=None if source.class_values else source.target_mean,
        target_std=None if source.class_values else source.target_std,
        label_type=source.label_type,  # predictions come back in this type (ctq predict)
        centred=True,
    )


def pack_spec(data: DataConfig, source: Source, segments: int, seed: int, pack_id: str) -> PackSpec:
    stats = pack_stats(source, segments)
    x_bytes = feature_bytes_sql(source.features, stats)
    y_bytes = label_bytes_sql("t." + quote_ident(source.label), source.label_category, source.class_values,
                              target_offset(stats))
    validation_rows = source.rows - source.train_rows
    return PackSpec(
        pack_id=pack_id, table=qualified("ctq_data", f"pack_{pack_id}"), source=source.sql_name,
        is_table=source.is_table, x_bytes=x_bytes, y_bytes=y_bytes, seed=seed,
        validation_cut=round(data.validation_fraction * VALIDATION_MODULUS), segments=segments,
        buckets=buffer_count(source.train_rows / segments, source.width, data.buffer_rows),
        validation_buckets=buffer_count(validation_rows, source.width, data.buffer_rows),
        columns=len(source.features),
    )


def pack_workers(spec: PackSpec, segments: int, preloading: bool) -> int:
    """How many sessions pack at once: one per core, at least one, at most one per buffer; while
    the ``segments`` preload (each backend imports Keras meanwhile, in a session of its own:
    Engine.preload), only the cores they leave. With the default segments (one per core) the run
    then packs in the snapshot's own session and holds segments + 2 sessions; without a preload,
    cores + 1; with fewer segments than cores, at most cores + 1."""
    cores = (os.cpu_count() or 1) - (segments if preloading else 0)
    return max(1, min(spec.buckets * segments + spec.validation_buckets, cores))


async def ensure_pack(conn: asyncpg.Connection, dsn: str, engine: Engine, data: DataConfig, source: Source,
                      segments: int, seed: int, moment: Snapshot, preloading: bool = False) -> Pack:
    """Return the pack for this source content + settings, creating it if needed.

    ``moment`` is the snapshot ``source`` was profiled in: the packing reads the same rows (see
    :class:`ctq.connection.Snapshot`), so the pack holds the source as of ``moment.as_of``, each
    row exactly once, and its recorded row counts are the packed ones. It ends once the pack is
    complete. ``preloading``: the segments' sessions are open meanwhile (see :func:`pack_workers`).

    The ``ctq.packs`` row is written last: a pack is usable once it is there, and a packing that
    failed or was killed leaves at most a table without that row, dropped by the next attempt.
    Concurrent runs on the same source serialise on an advisory lock and share one pack.
    """
    settings = pack_settings(data, source, segments, seed, engine)
    digest = hashlib.sha256(
        json.dumps([f"{source.schema}.{source.name}", source.fingerprint, settings], sort_keys=True).encode()
    ).hexdigest()[:16]
    found = await conn.fetchrow(engine.template("pack_find.sql"), digest)
    if found:
        await use_pack(conn, digest)
        return Pack(digest, found["table_name"], PackStats.from_dict(json.loads(found["stats"])), reused=True)
    spec = pack_spec(data, source, segments, seed, digest)
    started = time.perf_counter()
    await conn.execute(template("pack_lock.sql"), digest)
    try:
        found = await conn.fetchrow(engine.template("pack_find.sql"), digest)  # a concurrent run packed it
        if found:
            await use_pack(conn, digest)
            return Pack(digest, found["table_name"], PackStats.from_dict(json.loads(found["stats"])), reused=True)
        await conn.execute(render("drop_table.sql", table=spec.table))  # left by a packing that died
        await engine.create_pack(conn, spec)
        try:
            await engine.fill_pack(dsn, spec, workers=pack_workers(spec, segments, preloading), source=moment)
            await moment.end()
            await engine.finish_pack(conn, spec)
            stats = replace(pack_stats(source, segments), source_as_of=moment.as_of.isoformat())
            await engine.write(conn, "pack_insert.sql", digest, source.display_name, source.fingerprint,
                               json.dumps(settings), f"ctq_data.pack_{digest}", json.dumps(stats.as_dict()), source.schema,
                               source.name)
        except BaseException:
            await moment.end(commit=False)  # (on Greenplum its transaction holds the pack table)
            await _drop_quietly(conn, spec.table)
            raise
    except asyncpg.exceptions.PostgresError as exc:
        if exc.sqlstate == SQLSTATE_DATA or exc.sqlstate in TYPE_ERRORS:
            raise DataError(f"data: {exc.message}") from exc
        raise
    finally:
        await conn.execute(template("pack_unlock.sql"), digest)
    return Pack(digest, f"ctq_data.pack_{digest}", stats, reused=False, seconds=time.perf_counter() - started,
                other=await other_settings(conn, source, settings, digest))


async def _columns_beyond_float32(conn, source_sql: str, centred: list[tuple[str, float]]) -> list[str]:
    """The columns of ``centred`` ((name, training mean)) with a value farther than float32's
    largest magnitude from that mean."""
    found = []
    for start in range(0, len(centred), BATCH_VALUES):
        part = centred[start:start + BATCH_VALUES]
        row = await conn.fetchval(render("too_large.sql", source=source_sql, checks=", ".join(
            f"coalesce(max(abs(t.{quote_ident(name)}::float8 - ({mean!r})::float8)) > {FLOAT32_MAX!r}, false)"
            for name, mean in part)))
        found += [name for (name, _), hit in zip(part, row) if hit]
    return found


def beyond_float32(found: list[str], label: str) -> str:
    return (f"{fault_key(found, label)}: {columns_have(found)} values beyond float32's range once centred "
            "(magnitudes over 3.4e38, as a model takes them); scale them in a view")


def fault_key(names: list[str], label: str) -> str:
    """The grid.yaml key of a refusal about columns ``names``: the label's, the features', or
    their common one when both are at fault."""
    keys = {"data.label" if name == label else "data.features" for name in names}
    return keys.pop() if len(keys) == 1 else "data"


def columns_have(names: list[str]) -> str:
    return f"column {names[0]!r} has" if len(names) == 1 else f"columns {', '.join(map(repr, names))} have"


async def changed_since_packed(conn: asyncpg.Connection, engine: Engine, pack_id: str) -> str | None:
    """Whether the source of pack ``pack_id`` has changed since it was packed (its content
    fingerprint, one read-only scan): None when unchanged, else what changed, e.g. "public.t has
    changed since it was packed (as of 2026-12-04 06:00:00+00): ...". The fingerprint sums each
    row's version (its place and the transaction that wrote it: engine.row_version), because a
    run's validation split is keyed on the row's place; an update to the same values counts. A
    source that is gone counts as changed."""
    pack = await conn.fetchrow(template("pack_source.sql"), pack_id)
    as_of = pack["as_of"] or pack["created_at"].isoformat(sep=" ", timespec="seconds")
    rel = await _find_relation(conn, pack["source_schema"], pack["source_name"])
    if rel is None:
        return f"{pack['display']} no longer exists (packed as of {as_of})"
    if await content_fingerprint(conn, engine, rel) == pack["source_fingerprint"]:
        return None
    return (f"{pack['display']} has changed since it was packed (as of {as_of}): a row was written (inserted, "
            "deleted, or updated, even to the same values) or moved (VACUUM FULL, CLUSTER)")


async def write_validation_rows(conn: asyncpg.Connection, engine: Engine, pack: dict, dest: str) -> int:
    """Create table ``dest`` (quoted SQL) holding the rows of ``pack``'s source (catalog.run_pack) that
    its run held out for validation, every column of theirs, by the packing's own rule: so a
    baseline can be scored on the very rows ctq validated on. The row key is physical on a table
    (ctid), so a source changed since it was packed is refused (DataError): its rows are no longer
    the ones split. Returns the number of rows written."""
    changed = await changed_since_packed(conn, engine, pack["pack_id"])
    if changed:
        raise DataError(f"{changed}: its rows are no longer the ones the run split; ctq cannot tell its "
                        "validation rows now")
    source = await conn.fetchrow(template("pack_source.sql"), pack["pack_id"])
    rel = await _find_relation(conn, source["source_schema"], source["source_name"])
    settings = pack["settings"]
    cut = round(settings["validation_fraction"] * VALIDATION_MODULUS)
    status = await conn.execute(render("validation_rows.sql", dest=dest, source=qualified(rel["schema"], rel["name"]),
                                       key=engine.row_key("t", settings["seed"], rel["relkind"] in ("r", "p")),
                                       modulus=VALIDATION_MODULUS, cut=cut))
    return int(status.split()[-1])


async def use_pack(conn, pack_id: str) -> None:
    """Reading a pack someone else packed: ``ctq.use_pack`` grants SELECT on its table to this role,
    only if it can SELECT the pack's source (the check is the database's, see security.sql).
    DataError (exit 2) when that source no longer exists: then nobody may read the pack."""
    try:
        await conn.fetchval(template("use_pack.sql"), pack_id)
    except asyncpg.exceptions.UndefinedTableError as exc:
        raise DataError(f"{exc.message}: a pack is read only by a role that may read its source; create the table "
                        "again under that name (a resume then needs --keep-pack), or train a new run") from None


async def _drop_quietly(conn, table: str) -> None:
    try:
        await conn.execute(render("drop_table.sql", table=table))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass

"""``ctq predict`` and ``ctq evaluate``: a trained model scores a table inside the database.

Scoring is MOP's targeted query without the hopping: one connection per segment, each sending a
query that feeds that segment's rows to the aggregate ``ctq.score_step`` (in the server, as training's
``ctq.train_step``), all segments at once. A row to score becomes the same float4 bytes packing
writes (``packing.feature_bytes_sql``) and is decoded and normalised by the same in-database code
as in training (``indb.decode_features``, ``indb.normalise_features``), with the statistics recorded
with the run's pack. How rows are split into segments is the engine's (``Engine.score_query``): on
PostgreSQL by a hash of the row, on Greenplum every segment scores its own rows.

Bad input is refused before anything is written, with exit code 2: a missing table or column, a
feature that is not numeric, NULLs, NaN or infinite values, a NULL or repeated id, an existing
``--out`` without ``--replace``. Predictions are written into a staging table that is renamed to
``--out`` in one transaction once every segment is done, so a failure leaves nothing behind. A
session killed outright (``kill -9``) cannot clean up: the session writing a staging table holds
an advisory lock on its name, and the next ``ctq predict`` or ``ctq evaluate`` of the same owner
drops staging tables whose lock nobody holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import time
from dataclasses import dataclass

import asyncpg

from ctq import catalog, indb
from ctq.config import parse_table_name
from ctq.connection import Snapshot, all_or_none
from ctq.engines.base import Engine, ScoreSpec
from ctq.errors import DataError, NotFound, PermissionDenied, RunFailed, UsageError
from ctq.indb import SQLSTATE_DATA, SQLSTATE_MODEL
from ctq.metrics import Metric, row_metric
from ctq.rules import Hyperparameters, PackStats, ScoreRequest
from ctq.packing import (FLOAT32_MAX, _drop_quietly, _find_relation, _label_number, _sql_literal,
                          beyond_float8_sql, centring, check_same_rows, feature_bytes_sql, find_column, label_bytes_sql, null_columns,
                          target_offset, unreadable_number)
from ctq.sql import column_batches, qualified, quote_ident, render, template, unbatch


@dataclass(frozen=True)
class TrainedModel:
    """A model of a run that has trained (its state stays in the database: scoring reads it where
    it is stored, export with :func:`ctq.engines.base.Engine.read_state`), and the pack statistics
    its data was normalised with."""

    run_id: int
    model_id: int
    name: str
    architecture: dict
    hyperparameters: Hyperparameters
    task: str
    features: tuple[str, ...]  # the source's feature columns, as resolved when packing
    label: str
    stats: PackStats  # ctq.packs.stats
    run_metric: str = "val_loss"  # the run's ranking metric (grid.yaml metric)
    unfinished: str | None = None  # for a model still in training: what its weights are (a note)

    @property
    def class_labels(self) -> list | None:
        """The class values as the source has them, in class-index order: text as is, booleans as
        true/false, whole numbers as integers (the pack records numbers as floats)."""
        values = self.stats.class_values
        if values is None or self.stats.label_encoding == "index":
            return values
        if (self.stats.label_type or "") == "boolean":
            return [bool(float(v)) for v in values]
        return [int(v) if float(v).is_integer() else float(v) for v in values]

    @property
    def notes(self) -> list[str]:
        """What a result from this model should say (``note:`` lines): that it is still in training."""
        return [self.unfinished] if self.unfinished else []

    @property
    def ranking_metric(self) -> str | None:
        """The run's metric when it is a ranking metric (auc, f1, precision, recall), else None."""
        return Metric(self.run_metric).ranking(self.task)

    @property
    def metric_name(self) -> str:
        """The per-row metric that scoring computes besides (indb.score_final): accuracy or mae."""
        return row_metric(self.task)


async def trained_model(conn: asyncpg.Connection, run_id: int, model_id: int | None = None) -> TrainedModel:
    """Model ``model_id`` of run ``run_id`` (its id in ``ctq models RUN_ID``), or, without one, the
    run's best: the first of the leaderboard (same ranking and tie-break) that has a score and did
    not fail. Raises NotFound (exit 2) for a missing run or model, UsageError for one that failed
    or never trained."""
    run = await catalog.require_run(conn, run_id)
    if model_id is None:
        board = await catalog.leaderboard(conn, run_id)
        best = next((r for r in board if r["score"] is not None and r["status"] != "failed"), None)
        if best is None:
            raise NotFound(f"run {run_id} has no trained model yet (see ctq models {run_id})")
        model_id = best["model_id"]
    row = await conn.fetchrow(template("score_model.sql"), run_id, model_id)
    if row is None:
        raise NotFound(f"run {run_id} has no model {model_id} (see ctq models {run_id})")
    if row["status"] == "failed":
        raise UsageError(f"model {model_id} of run {run_id} failed ({row['message']}); choose another "
                         f"(ctq models {run_id})")
    if not await conn.fetchval(template("model_trained.sql"), run_id, model_id):
        raise UsageError(f"model {model_id} of run {run_id} has not trained yet")
    pack = await catalog.run_pack(conn, run_id)
    settings = pack["settings"]
    return TrainedModel(run_id=run_id, model_id=model_id, name=row["name"],
                        architecture=json.loads(row["architecture"]),
                        hyperparameters=Hyperparameters.of(json.loads(row["hyperparameters"])),
                        task=settings["task"], features=tuple(settings["features"]), label=settings["label"],
                        stats=pack["stats"], run_metric=run["metric"], unfinished=_unfinished(run, row))


def _unfinished(run, model) -> str | None:
    """What the weights of a model still in training are (its latest state, after its last hop),
    for a note: scoring it is allowed (a look at a long run's leader), but not mistaken for the
    final model. None for a model that finished (succeeded, or stopped by the search)."""
    if model["status"] not in ("pending", "training"):
        return None
    state = "is still running" if run["alive"] else "is stale" if run["status"] == "running" else f"is {run['status']}"
    return (f"model {model['model_id']} of run {run['run_id']} has not finished training ({model['epochs_done']} "
            f"of {run['epochs']} epochs done; run {run['run_id']} {state}): these are its weights so far")


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    is_table: bool
    columns: dict  # name -> {name, type, category, element_category}
    display: str  # the name as SQL takes it, quoted where it must be

    @property
    def sql(self) -> str:
        return qualified(self.schema, self.name)



def _parse(text: str, option: str) -> tuple[str | None, str]:
    try:
        return parse_table_name(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None


async def _table(conn, text: str, option: str) -> Table:
    """The table (or view) ``text`` names, readable by this role; UsageError/PermissionDenied else."""
    schema, name = _parse(text, option)
    rel = await _find_relation(conn, schema, name)
    if rel is None:
        raise UsageError(f"{option} {text}: table does not exist (or is not visible to this user)")
    await catalog.require_select(conn, rel, option)
    columns = {r["name"]: dict(r) for r in await conn.fetch(template("source_columns.sql"), rel["oid"])}
    return Table(rel["oid"], rel["schema"], rel["name"], rel["relkind"] in ("r", "p"), columns, rel["display"])


def _column(table: Table, name: str, option: str, what: str, typed: bool = False) -> dict:
    """The column ``name`` of ``table``: a name the user ``typed`` is taken as SQL takes it (and as
    grid.yaml's are, :func:`ctq.packing.find_column`); a model's own columns are its exact names."""
    col = find_column(table.columns, name) if typed else table.columns.get(name)
    if col is None:
        available = ", ".join(sorted(table.columns)) or "(none)"
        where = f"--table {table.display}" if option == "--table" else f"{option} (in --table {table.display})"
        raise DataError(f"{where}: column {name!r} ({what}) does not exist (columns: {available})")
    return col


def _check_features(model: TrainedModel, table: Table) -> None:
    array = model.stats.x_layout == "array"
    categories = model.stats.categories or {}
    for name in model.features:
        col = _column(table, name, "--table", f"a feature of model {model.model_id}")
        if name in categories:  # any type: looked up in the pack's vocabulary as text
            continue
        numeric = col["element_category"] == "N" if array else col["category"] == "N"
        if "X" in (col["category"], col["element_category"]):
            raise DataError(f"--table {table.display}: {unreadable_number(col)}")
        if not numeric:
            want = "a numeric array" if array else "a number"
            raise DataError(f"--table {table.display}: column {name!r} has type {col['type']}, not {want} "
                            f"(as the feature the model was trained on)")


def _label_category(model: TrainedModel, table: Table) -> str:
    """The label column's category (N, B, S), checked against how the model's labels were packed."""
    col = _column(table, model.label, "--table", f"the label of run {model.run_id}")
    category = col["category"]
    text_classes = model.stats.label_encoding == "index"
    if (text_classes and category != "S") or (not text_classes and category not in ("N", "B")) or \
            (model.task == "regression" and category != "N"):
        raise DataError(f"--table {table.display}: label column {model.label!r} has type {col['type']}, "
                        f"unlike the label the model was trained on ({model.stats.label_type or model.task})")
    return category


def _class_literals(model: TrainedModel) -> list[str]:
    """The model's class values as SQL literals of the label's type, in class-index order."""
    label_type = model.stats.label_type or ""
    out = []
    for v in model.stats.class_values:
        if model.stats.label_encoding == "index":
            out.append(_sql_literal(str(v)))
        elif label_type == "boolean":
            out.append("true" if float(v) else "false")
        else:
            out.append(str(int(v)) if float(v).is_integer() else repr(float(v)))
    return out


def prediction_type(model: TrainedModel) -> str:
    """The SQL type of ``--out``'s prediction column: the label's own type for classes (older packs,
    which did not record it: text for text classes, bigint otherwise), float8 for regression."""
    if model.task == "regression":
        return "float8"
    return model.stats.label_type or ("text" if model.stats.label_encoding == "index" else "bigint")


async def _check_rows(conn, engine: Engine, table: Table, model: TrainedModel, *, id_column: str | None,
                      label_category: str | None) -> tuple[int, list[str]]:
    """One read-only scan; DataError naming the column for NULLs, NaN/infinite values, arrays of
    another length, NULL or repeated ids (``id_column``, if any), (evaluate) unknown classes, and a
    categorical column none of whose values is in the model's vocabulary (a column of another type
    or spelling: '1.0' is not the category '1'; every row would be scored as the unknown category).
    Returns the row count and notes (a categorical column with some unseen values); a table
    without rows is 0 to predict and a DataError to evaluate (``id_column`` None)."""
    read = [quote_ident(id_column)] if id_column is not None else []
    if label_category is not None:
        read.append(quote_ident(model.label))
    array = model.stats.x_layout == "array"
    width = int(model.stats.input_dim)
    categories = model.stats.categories or {}
    # one float8 value per feature, NULL when the feature is NULL and NaN when it is bad (an array:
    # of another length), so that the checks of every feature are the same two aggregates of a slot
    values = []
    centres = centring(model.features, model.stats) if not array else {}
    for name in model.features:
        q = "t." + quote_ident(name)
        if name in categories:  # NULL and unseen values are the unknown category (feature_bytes_sql): NaN
            known = _sql_literal(json.dumps({v: 0 for v in categories[name]["values"]}, sort_keys=True))
            values.append(f"(CASE WHEN {q} IS NULL THEN NULL WHEN {known}::jsonb ? ({q})::text THEN 0::float8 "
                          "ELSE 'NaN'::float8 END)")  # marks the unseen ones, counted apart
        elif array:
            values.append(f"(CASE WHEN {q} IS NULL THEN NULL WHEN array_ndims({q}) = 1 AND array_length({q}, 1) = "
                          f"{width} THEN 0::float8 ELSE 'NaN'::float8 END)")
        else:  # a value packing could not encode counts as bad: beyond float8 (a numeric column),
            # or beyond float4 once centred ('value out of range: overflow', naming nothing: a user trial)
            number = f"{q}::float8"
            if table.columns[name].get("base_type") == "numeric":
                number = f"(CASE WHEN {beyond_float8_sql(q)} THEN 'NaN'::float8 ELSE {q}::float8 END)"
            values.append(f"(CASE WHEN abs({number} - {centres[name]!r}::float8) > {FLOAT32_MAX!r} THEN 'NaN'::float8 "
                          f"ELSE {number} END)")
    batches, slots, outer = column_batches(values, table.sql, engine.name, list(dict.fromkeys(read)))
    id_sql = f"{outer}.{quote_ident(id_column)}" if id_column is not None else "NULL::int"
    slot = [f"c.ctq_{i}" for i in range(1, slots + 1)]
    nulls = [f"count(*) - count({x})" for x in slot]
    bad = [f"count(*) FILTER (WHERE {x} IN ('NaN', 'Infinity', '-Infinity'))" for x in slot]
    label_nulls = label_bad = "0"
    if label_category is not None:
        q = f"{outer}.{quote_ident(model.label)}"
        label_nulls = f"count(*) - count({q})"
        if model.task == "regression":
            label_bad = f"count(*) FILTER (WHERE {q}::float8 IN ('NaN', 'Infinity', '-Infinity'))"
        elif label_category == "S":
            label_bad = f"count(*) FILTER (WHERE {q}::text NOT IN ({', '.join(_class_literals(model))}))"
        else:
            classes = ", ".join(repr(float(v)) for v in model.stats.class_values)
            label_bad = f"count(*) FILTER (WHERE {_label_number(q, label_category)} NOT IN ({classes}))"
    rows = await conn.fetch(render("score_check.sql", id=id_sql, nulls=", ".join(nulls), bad=", ".join(bad),
                                   label_nulls=label_nulls, label_bad=label_bad, batches=batches))
    where = f"--table {table.display}"
    if not rows:  # (grouped by batch: no rows, no groups)
        if id_column is None:  # ctq evaluate: no loss or metric of no rows
            raise DataError(f"{where}: table has no rows to evaluate the model on")
        return 0, []  # ctq predict: no predictions (a nightly batch without new rows is not an error)
    row = next(r for r in rows if r["ctq_batch"] == 0)
    n = row["n"]
    nulls_of = unbatch(rows, "nulls", len(values))
    with_nulls = [(name, count) for name, count in zip(model.features, nulls_of) if count and name not in categories]
    async def example(column: str, condition: str) -> str:
        """One row to look at, by its id (a nightly batch of thousands: a user trial); ctq evaluate
        has no id column: nothing."""
        if id_column is None:
            return ""
        first = await conn.fetchval(render("row_example.sql", id=quote_ident(id_column), source=table.sql,
                                           condition=condition))
        return f" (e.g. the row with {id_column} {first} in {column!r})"

    if with_nulls:
        name = with_nulls[0][0]
        first = await example(name, f"t.{quote_ident(name)} IS NULL")
        raise DataError(f"{where}: {null_columns(with_nulls, n)}{first}; filter or impute them first")
    notes = []
    for name, value, wrong, missing in zip(model.features, values, unbatch(rows, "bad", len(values)), nulls_of):
        if wrong and name in categories:
            vocabulary = categories[name]["values"]
            known = ", ".join(map(repr, vocabulary[:3])) + (", ..." if len(vocabulary) > 3 else "")
            if wrong == n - missing:
                raise DataError(f"{where}: column {name!r}: none of its {wrong} values is one of the "
                                f"{len(vocabulary)} categories the model was trained on ({known}; compared as text): "
                                "a column of another type or spelling than in training? (cast it as it was)")
            notes.append(f"column {name!r}: {wrong} of {n} rows have a category the model was not trained on, "
                         "scored as the unknown category")
        elif wrong:
            problem = f"arrays of another length than {width}" if array else \
                "NaN or infinite values, or values beyond the model's float32 inputs once centred (|x - mean| > 3.4e38)"
            bad = await example(name, f"{value} IN ('NaN', 'Infinity', '-Infinity')")
            raise DataError(f"{where}: column {name!r} has {problem} in {wrong} row(s){bad}")
    if id_column is not None:
        if row["ids"] < n:
            raise DataError(f"{where}: id column has {n - row['ids']} NULL value(s); ids must identify the rows")
        if row["distinct_ids"] < n:
            repeated = await conn.fetchval(render("repeated_id.sql", id=quote_ident(id_column), source=table.sql))
            raise DataError(f"{where}: id column has {n - row['distinct_ids']} repeated value(s) (e.g. {repeated}); "
                            "ids must be unique")
    if row["label_nulls"]:
        raise DataError(f"{where}: label column {model.label!r} has {row['label_nulls']} NULL value(s)")
    if row["label_bad"]:
        problem = "NaN or infinite values" if model.task == "regression" else "values that are not one of the " \
            f"model's classes ({', '.join(map(str, model.class_labels))})"
        raise DataError(f"{where}: label column {model.label!r} has {problem} in {row['label_bad']} row(s)")
    return n, notes


def _params(model: TrainedModel, segment: int, cores: list[int], action: str, proba: bool) -> str:
    """The JSON parameters of one segment's scoring query (see indb.score_final)."""
    return ScoreRequest(segment=segment, cores=cores, task=model.task, stats=model.stats.for_server(),
                        arch=model.architecture, hyper=model.hyperparameters, action=action, proba=proba,
                        metric=model.ranking_metric).to_json()


async def _on_every_segment(dsn: str, engine: Engine, statements: list[tuple[str, tuple]], app: str,
                            moment: Snapshot) -> list:
    """Run statement k on segment k's own connection, all at once (concurrent targeted queries),
    each reading ``moment`` where it was exported (else what was staged from it); the first
    failure cancels the others. Returns each segment's rows."""

    async def one(segment: int, sql: str, args: tuple):
        conn = await engine.segment_connection(dsn, f"{app} segment {segment}")
        try:
            if moment.name is None:
                return await conn.fetch(sql, *args)
            async with moment.joined(conn):
                return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return await all_or_none(one(s, sql, args) for s, (sql, args) in enumerate(statements))


def _scoring_error(exc: asyncpg.PostgresError, table: Table) -> Exception:
    """A failure inside the scoring function: bad data (exit 2) or a model that cannot score (1)."""
    if exc.sqlstate == SQLSTATE_DATA:
        return DataError(f"--table {table.display}: {exc.message}")
    if exc.sqlstate == SQLSTATE_MODEL:
        return RunFailed(f"scoring failed: {exc.message}")
    return exc


async def _score(conn, dsn, engine, spec: ScoreSpec, model, cores, action, proba, make_sql, table: Table,
                 moment: Snapshot) -> list:
    """Stage (if the engine needs to: in ``moment``'s transaction, which then commits so the
    segments can read the stage), run every segment's statement, clean up."""
    params = [_params(model, s, cores[s], action, proba) for s in range(spec.segments)]
    await _claim_stage(conn, spec.stage)
    try:
        args = await engine.prepare_scoring(moment.conn, spec, model.run_id, model.model_id, params)
        if moment.name is None:
            await moment.end()
        return await _on_every_segment(dsn, engine, [(make_sql(s), args[s]) for s in range(spec.segments)],
                                       f"ctq {action}", moment)
    except asyncpg.PostgresError as exc:
        raise _scoring_error(exc, table) from exc
    finally:
        await engine.finish_scoring(conn, spec)
        await _release_stage(conn, spec.stage)


STAGE_LOCK_CLASS = 0x637473  # advisory locks held on staging tables by the session that writes them


def _stage_name() -> str:
    return qualified("ctq_data", f"score_{secrets.token_hex(8)}")


async def _claim_stage(conn: asyncpg.Connection, table: str) -> None:
    """Hold the advisory lock of staging table ``table`` (as :func:`qualified` writes it) for the
    rest of the session, from before the table exists: a staging table whose lock nobody holds
    was left by a session that died (``kill -9``)."""
    await conn.execute(template("stage_lock.sql"), STAGE_LOCK_CLASS, table)


async def _release_stage(conn: asyncpg.Connection, table: str) -> None:
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await conn.execute(template("stage_unlock.sql"), STAGE_LOCK_CLASS, table)


async def drop_abandoned_stages(conn: asyncpg.Connection) -> list[str]:
    """Drop the staging tables (``abandoned_stages.sql``) that the caller owns and whose writer is
    gone: their advisory lock is free. Returns the tables dropped; a table another session is
    writing is left (its lock is held)."""
    dropped = []
    for row in await conn.fetch(template("abandoned_stages.sql")):
        table = qualified(row["schema"], row["name"])
        if await conn.fetchval(template("stage_try_lock.sql"), STAGE_LOCK_CLASS, table):
            try:
                await conn.execute(render("drop_table.sql", table=table))
                dropped.append(table)
            finally:
                await _release_stage(conn, table)
    return dropped


async def predict(conn: asyncpg.Connection, dsn: str, engine: Engine, segments: int, cores: list[list[int]],
                  run_id: int, *, table: str, out: str, id_column: str, model_id: int | None = None,
                  proba: bool = False, replace: bool = False) -> dict:
    """Score ``table`` with a model of run ``run_id`` into a new table ``out`` (id, prediction
    [, probabilities]): class values in the label's own type (probabilities: float8[] in the order
    of ``ctq.packs.stats.class_values``), regression values in the target's units. Returns a summary
    dict. Errors: see the module docstring."""
    started = time.perf_counter()
    model = await trained_model(conn, run_id, model_id)
    source = await _table(conn, table, "--table")
    _check_features(model, source)
    id_col = _column(source, id_column, "--id-column", "the id column", typed=True)
    if proba and model.task != "classification":
        raise UsageError("--proba: the model is a regression model; it predicts values, not class probabilities")
    dest_schema, dest_name = _parse(out, "--out")
    dest_schema = dest_schema or await conn.fetchval(template("current_schema.sql"))
    if dest_schema is None:
        raise UsageError(f"--out {out}: no schema to create it in (the search_path is empty); name one")
    if not await conn.fetchval(template("schema_exists.sql"), dest_schema):
        raise UsageError(f"--out {out}: schema {dest_schema!r} does not exist; create it first "
                         f"(CREATE SCHEMA {quote_ident(dest_schema)}) or name another")
    if not await conn.fetchval(template("may_create_in_schema.sql"), dest_schema):
        user = await catalog.current_role(conn)
        raise PermissionDenied(f"--out {out}: role {user} may not create tables in schema {dest_schema}; ask its "
                               f"owner or an administrator for: GRANT CREATE ON SCHEMA {quote_ident(dest_schema)} "
                               f"TO {quote_ident(user)}")
    dest_display = await conn.fetchval(template("display_name.sql"), dest_schema, dest_name)
    existing = await _find_relation(conn, dest_schema, dest_name)
    if existing is not None and existing["oid"] == source.oid:
        raise UsageError(f"--out {out}: is the table to score (--table); write the predictions elsewhere")
    if existing is not None and not replace:
        raise UsageError(f"--out {out}: table {dest_display} exists; use --replace to replace it")
    if existing is not None and existing["relkind"] not in ("r", "p"):
        raise UsageError(f"--out {out}: {dest_display} is not a table; --replace only replaces tables")
    if existing is not None:  # the drop comes after scoring every row: what it would refuse, before
        blockers = [r["object"] for r in await conn.fetch(template("drop_blockers.sql"), existing["oid"])]
        if blockers:
            raise UsageError(f"--out {out}: cannot replace {dest_display}: {', '.join(blockers)} "
                             f"depend{'s' if len(blockers) == 1 else ''} on it; drop or change "
                             f"{'it' if len(blockers) == 1 else 'them'} first, or write elsewhere")
    id_sql = "t." + quote_ident(id_col["name"])
    async with engine.snapshot(dsn) as moment:  # the row check and every segment read one moment
        rows, notes = await _check_rows(moment.conn, engine, source, model, id_column=id_col["name"],
                                        label_category=None)
        await check_same_rows(dsn, engine, moment, source.sql, source.display, source.is_table, "--table")
        n_classes = len(model.stats.class_values or ()) if model.task == "classification" else 0
        await drop_abandoned_stages(conn)
        staging = qualified(dest_schema, f"ctq_predict_{secrets.token_hex(8)}")
        spec = ScoreSpec(source=source.sql, is_table=source.is_table, id=id_sql, id_type=id_col["type"],
                         x_bytes=feature_bytes_sql(model.features, model.stats), y_bytes="NULL::bytea",
                         segments=segments, stage=_stage_name())
        proba_column = ", probabilities float8[]" if proba else ""
        await _claim_stage(conn, staging)
        try:
            await conn.execute(render("predictions_create.sql", table=staging, id_type=id_col["type"],
                                      prediction_type=prediction_type(model), proba_column=proba_column))
            if model.task == "classification":
                prediction = f"(ARRAY[{', '.join(_class_literals(model))}]::{prediction_type(model)}[])[u.p::int + 1]"
            else:
                prediction = "u.p"
            probabilities = (f", (s.r).probabilities[((u.i - 1) * {n_classes} + 1)::int:(u.i * {n_classes})::int]"
                             if proba else "")

            def statement(segment: int) -> str:
                return render("score_insert.sql", dest=staging, proba_column=", probabilities" if proba else "",
                              prediction=prediction, probabilities=probabilities,
                              score_query=engine.score_query(spec, segment))

            if rows:
                await _score(conn, dsn, engine, spec, model, cores, "predict", proba, statement, source, moment)
            written = await conn.fetchval(render("count_rows.sql", table=staging))
            if written != rows:
                raise RunFailed(f"scoring wrote {written} predictions for {rows} rows of {source.display}")
            async with conn.transaction():
                existing = await _find_relation(conn, dest_schema, dest_name)
                if existing is not None:
                    if not replace:
                        raise UsageError(f"--out {out}: table {dest_display} was created meanwhile; "
                                         "use --replace to replace it")
                    # what readers of the old table hold carries over: a nightly --replace took the
                    # dashboards' SELECT away (a user trial)
                    for statement in await conn.fetch(render("carry_grants.sql", table=staging), existing["oid"]):
                        await conn.execute(statement[0])
                    await conn.execute(render("drop_table.sql", table=qualified(dest_schema, dest_name)))
                await conn.execute(render("rename_table.sql", table=staging, new_name=quote_ident(dest_name)))
        except BaseException:
            await _drop_quietly(conn, staging)
            raise
        finally:
            await _release_stage(conn, staging)
    return {"run_id": run_id, "model_id": model.model_id, "model": model.name, "table": source.display,
            "out": dest_display, "rows": rows, "segments": segments, "proba": proba,
            "prediction_type": prediction_type(model), "seconds": round(time.perf_counter() - started, 3),
            "notes": model.notes + notes}


async def evaluate(conn: asyncpg.Connection, dsn: str, engine: Engine, segments: int, cores: list[list[int]],
                   run_id: int, *, table: str, model_id: int | None = None) -> dict:
    """Loss and metric of a model of run ``run_id`` on the held-out ``table`` (which has the run's
    features and label columns), computed on every segment at once and weighed by rows: the mean
    cross-entropy and accuracy (classification) or the mean squared error and mean absolute error
    in the target's units (regression), without regularisation terms (see indb.score_final); for a
    run ranked by AUC, F1, precision or recall, that metric too, over all rows (each segment
    returns the metric's counts, summed here: indb.ranking_metric_state)."""
    started = time.perf_counter()
    model = await trained_model(conn, run_id, model_id)
    source = await _table(conn, table, "--table")
    _check_features(model, source)
    category = _label_category(model, source)
    await drop_abandoned_stages(conn)
    spec = ScoreSpec(source=source.sql, is_table=source.is_table, id="NULL::int", id_type="int",
                     x_bytes=feature_bytes_sql(model.features, model.stats),
                     y_bytes=label_bytes_sql("t." + quote_ident(model.label), category, model.stats.class_values,
                                             target_offset(model.stats)),
                     segments=segments, stage=_stage_name())
    async with engine.snapshot(dsn) as moment:  # the row check and every segment read one moment
        rows, notes = await _check_rows(moment.conn, engine, source, model, id_column=None, label_category=category)
        await check_same_rows(dsn, engine, moment, source.sql, source.display, source.is_table, "--table")
        results = await _score(conn, dsn, engine, spec, model, cores, "evaluate", False,
                               lambda s: render("score_evaluate.sql", score_query=engine.score_query(spec, s)),
                               source, moment)
    parts = [r for rs in results for r in rs if r["rows"]]
    scored = sum(r["rows"] for r in parts)
    if scored != rows:
        raise RunFailed(f"evaluation scored {scored} of {rows} rows of {source.display}")
    loss = math.fsum(r["loss"] * r["rows"] for r in parts) / scored
    metric = math.fsum(r["metric"] * r["rows"] for r in parts) / scored
    out = {"run_id": run_id, "model_id": model.model_id, "model": model.name, "table": source.display,
           "rows": rows, "segments": segments, "loss": loss, model.metric_name: metric}
    if model.ranking_metric:  # the run's AUC, F1...: from every segment's counts, over all rows
        out[model.ranking_metric] = indb.ranking_metric_result(
            model.task, model.ranking_metric, model.stats, [list(r["metric_state"]) for r in parts])
    out["seconds"] = round(time.perf_counter() - started, 3)
    out["notes"] = model.notes + notes
    return out


"""The Python API behind the CLI: each function does one command's real work.

Order in :func:`train` matters for "bad input writes nothing": the configuration is validated
without a database, then the source table is checked read-only, and only then is anything
installed, packed or recorded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
import urllib.parse
from dataclasses import dataclass
from typing import NoReturn

import asyncpg

from ctq import __version__, catalog, housekeeping
from ctq.config import RunConfig, fingerprint, load_config, model_name, model_seed, run_name_problem
from ctq.connection import connect as open_connection
from ctq.coordinator import (DEFAULT_CHECKPOINT_SECONDS, DEFAULT_RETRIES, Coordinator, Outcome, Progress, StatesLost, is_transient,
                             segment_cores, shared_cores)
from ctq.engines import detect, engine_named
from ctq.errors import (ConfigError, CtqError, DatabaseError, DataError, Interrupted, NotFound, PermissionDenied, RunFailed,
                        TooLarge, UsageError, is_missing_privilege, permission_denied, plain_text)
from ctq.metrics import Metric
from ctq.rules import Hyperparameters, ModelSpec, PackStats
from ctq.packing import (changed_since_packed, check_same_rows, ensure_pack, inspect_source, metric_class_note,
                          packed_model_io, use_pack, write_validation_rows)
from ctq.scheduler import SCHEDULING_RULES, BspScheduler, MopFixedScheduler, MopScheduler
from ctq.search import Decision, Search, search_class
from ctq.sql import qualified, quote_ident, render, template

SCHEDULERS = {"mop": MopScheduler, "mop-fixed": MopFixedScheduler, "bsp": BspScheduler}


@contextlib.asynccontextmanager
async def connect(dsn: str):
    try:
        conn = await open_connection(dsn)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # ValueError: a malformed DSN
        reason = " ".join(str(exc).split())
        if isinstance(exc, ValueError) and not isinstance(exc, OSError):
            reason = f"malformed DSN: {reason}"
        raise DatabaseError(f"cannot connect to the database ({reason}); check --dsn / CTQ_DSN or `ctq db status`") from exc
    try:
        yield conn
    except asyncpg.exceptions.InsufficientPrivilegeError as exc:  # 42501, row-level security included
        raise permission_denied(exc, getattr(getattr(conn, "_params", None), "user", None)) from exc
    finally:
        await conn.close()


@dataclass
class TrainResult:
    run_id: int
    status: str
    name: str
    best_model_id: int | None
    best_model: str | None
    best_metric: float | None
    metric: str
    wall_seconds: float
    hops: int
    retries: int
    utilization: float  # hop seconds / (segments x schedule_seconds), as ctq report and compare say
    compute_share: float  # Keras' seconds / (segments x schedule_seconds): catalog.schedule_shares
    failed_models: dict[int, str]
    leaderboard: list[dict]
    pack_reused: bool
    hop_results: list = dataclasses.field(default_factory=list, repr=False)  # per hop, this session
    schedule_seconds: float = 0.0  # the hop schedule's span as ctq.hops records it (a resumed run's: the whole run)
    check_seconds: float = 0.0  # checking and profiling the source (one scan)
    pack_seconds: float = 0.0  # packing it (0 when an existing pack was reused)
    engine: str = "postgres"
    notices: list = dataclasses.field(default_factory=list)
    run_hops: int = 0  # whole run, every session (a resumed run has several): hops recorded
    run_wall_seconds: float = 0.0  # whole run: from its creation to its end, pauses included
    stopped_models: dict = dataclasses.field(default_factory=dict)  # model_id -> why the search stopped it
    expected_hop_seconds: dict = dataclasses.field(default_factory=dict, repr=False)  # model_id -> warm-up's estimate

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id, "status": self.status, "name": self.name,
            "best_model_id": self.best_model_id, "best_model": self.best_model,
            "best_metric": self.best_metric, "metric": self.metric,
            "engine": self.engine, "notices": self.notices,
            "wall_seconds": round(self.wall_seconds, 3), "check_seconds": round(self.check_seconds, 3),
            "pack_seconds": round(self.pack_seconds, 3), "schedule_seconds": round(self.schedule_seconds, 3),
            "hops": self.hops, "retries": self.retries,
            "run_hops": self.run_hops, "run_wall_seconds": round(self.run_wall_seconds, 3),
            "segment_utilization": round(self.utilization, 4), "compute_share": round(self.compute_share, 4),
            "failed_models": {str(k): v for k, v in self.failed_models.items()},
            "stopped_models": {str(k): v for k, v in self.stopped_models.items()},
            "pack_reused": self.pack_reused,
            "leaderboard": [
                {k: row[k] for k in ("rank", "model_id", "name", "status", "epochs_done", "hyperparameters",
                                     "train_loss", "train_metric", "val_loss", "val_metric", "score")}
                for row in self.leaderboard
            ],
        }


def versions() -> dict:
    return {"ctq": __version__, "python": platform.python_version()}


def default_segments() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RunPlan:
    """Everything a coordinator session needs, read back from the catalog (so resume == start)."""

    run_id: int
    name: str
    schedule: str
    segments: int
    epochs: int
    seed: int
    metric: str
    metric_mode: str
    cores_per_segment: int | None
    failed: frozenset[int]
    completed: tuple[tuple[int, int, int], ...]
    engine: str = "postgres"
    pack: dict = dataclasses.field(default_factory=dict)  # the ctq.packs row (see catalog.run_pack)
    specs: dict[int, ModelSpec] = dataclasses.field(default_factory=dict)  # model_id -> its spec
    stream: bool = False  # segments stream their buffers on every hop (see streams())
    memory_budget_mb: int | None = None  # per segment (config); None: the server's memory decides (ctq.memory)
    class_weights: list | None = None  # per class index, when data.class_weight is "balanced"
    scheduling: str = "cost"  # MOP's rule among eligible models (ctq.scheduler.MopScheduler)
    observed: tuple[tuple[int, float], ...] = ()  # (model_id, seconds) of the hops already done
    method: str = "grid"  # search.method (ctq.search.METHODS)
    # the search's settings as the run recorded them: grid.yaml's search: (early stopping:
    # grace_period, reduction_factor; max_epochs = epochs), and for a search that asks its models
    # during the run the space and architectures resolved at creation
    search: dict = dataclasses.field(default_factory=dict)
    decisions: tuple = ()  # early stopping's decisions so far (ctq.search.Decision), in the order made
    stopped: frozenset[int] = frozenset()  # models the search stopped
    epochs_done: tuple[tuple[int, int], ...] = ()  # early stopping: (model_id, epoch count) completed, in finishing order
    warm: bool = False  # warm_start: every model's first hop starts from another run's final weights
    finished: tuple[tuple[int, float | None], ...] = ()  # asked during the run: (model_id, final metric or None) in finishing order
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS  # checkpoint_minutes (Coordinator._checkpoints)
    retries: int = DEFAULT_RETRIES  # grid.yaml retries (Coordinator._on_failure)

    @property
    def cores(self) -> list[list[int]]:
        """Each segment's cores (its backend pins its threads to them): ``cores_per_segment`` each,
        or this machine's cores shared out (ctq.coordinator.segment_cores)."""
        return segment_cores(self.segments, os.cpu_count() or 1, self.cores_per_segment)

    @property
    def data_bytes(self) -> int:
        """What a segment's cached data takes (:func:`segment_data_mib`; 0 when it streams)."""
        return 0 if self.stream else int(segment_data_mib(self.pack["stats"]) * 2**20)

    def asked_model(self, model_id: int, point: tuple, taken: set[str]) -> ModelSpec:
        """The ctq.models record of the configuration ``point`` a search asked for during the run
        (a name in ``taken`` gets ``#model_id``)."""
        arch_index, opt, lr, bs, mom = point
        arch = self.search["architectures"][arch_index]
        name = model_name(arch["name"], opt, lr, bs, mom)
        if name in taken:
            name = f"{name}#{model_id}"
        return ModelSpec(name, arch["spec"], Hyperparameters(opt, lr, bs, mom), model_seed(self.seed, model_id))

    @property
    def work_left(self) -> bool:
        """Whether a hop remains: a model neither failed nor stopped short of its epochs' hops, or a
        model the search has yet to ask for."""
        hops = collections.Counter(model for model, _, _ in self.completed)
        return len(self.specs) < self.model_budget or any(
            hops[m] < self.epochs * self.segments for m in self.specs if m not in self.failed | self.stopped)

    @property
    def model_budget(self) -> int:
        """Models the run trains in all: those a search that asks during the run will have asked, else its models."""
        return self.search["samples"] if search_class(self.method).asks_during_run else len(self.specs)


def recorded_search(settings) -> dict:
    """The ``search:`` mapping a run recorded (run_settings.sql's row; {} for none: a grid)."""
    return json.loads(settings["search"] or "null") or {}


async def load_plan(conn, run_id: int) -> RunPlan:
    run = await catalog.require_run(conn, run_id)
    models = await catalog.run_models(conn, run_id)
    pack = await catalog.run_pack(conn, run_id)
    settings = await conn.fetchrow(template("run_settings.sql"), run_id)
    search = {**recorded_search(settings), **json.loads(settings["resolved"] or "{}")}
    method = search_class(search.get("method"))
    stopping = method.early_stopping
    finished = ()
    if method.asks_during_run:
        finished = tuple((m["model_id"], Metric(run["metric"]).value(m) if m["status"] == "succeeded" else None)
                         for m in await catalog.finished_models(conn, run_id))
    return RunPlan(
        run_id=run_id, name=run["name"], schedule=run["schedule"], segments=run["segments"],
        epochs=run["epochs"], seed=run["seed"], metric=run["metric"], metric_mode=run["metric_mode"],
        cores_per_segment=run["cores_per_segment"],
        failed=frozenset(m["model_id"] for m in models if m["status"] == "failed"),
        completed=tuple(await catalog.completed_hops(conn, run_id)),
        scheduling=settings["scheduling"], method=method.method, search=search,
        decisions=tuple(Decision(d["model_id"], d["rung"], d["epoch"], d["value"], d["decision"] == "promote",
                                 d["reason"]) for d in await catalog.run_decisions(conn, run_id)) if stopping else (),
        stopped=frozenset(m["model_id"] for m in models if m["status"] == "stopped"),
        epochs_done=tuple((e["model_id"], e["epoch"] + 1) for e in await catalog.run_epochs(conn, run_id))
        if stopping else (),
        finished=finished, warm=settings["warm"],
        observed=tuple((r["model_id"], r["seconds"]) for r in await conn.fetch(template("hop_durations.sql"), run_id)),
        engine=pack["settings"].get("engine", "postgres"), pack=pack, stream=streams(settings["budget"], pack["stats"]),
        memory_budget_mb=settings["budget"],
        checkpoint_seconds=DEFAULT_CHECKPOINT_SECONDS if settings["checkpoint_minutes"] is None
        else 60.0 * float(settings["checkpoint_minutes"]),
        retries=DEFAULT_RETRIES if settings["retries"] is None else settings["retries"],
        class_weights=balanced_weights(pack["stats"].class_counts) if settings["class_weight"] else None,
        specs={m["model_id"]: ModelSpec.from_row(m) for m in models},
    )


async def train(config: RunConfig | str, dsn: str, *, name: str | None = None, schedule: str = "mop",
                scheduling: str | None = None, progress_factory=None, heartbeat_seconds: float = 5.0, log=None,
                notify=None) -> TrainResult:
    """Run a whole model selection; returns when every model has trained its epochs (or failed).

    ``scheduling`` ("cost" or "random") overrides the configuration's rule for MOP's choice among
    eligible models; the run records the rule it uses (a resume keeps it).

    ``log``, if given, is called with a line per preparation stage (checking, packing), which is
    what an unattended log shows before the first hop. ``notify(message)`` is called, before
    training, with anything the user should know that is not an error (e.g. a ``segments:``
    setting the engine does not use).
    """
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    if name:
        if (problem := run_name_problem(name)) is not None:  # as grid.yaml's name
            raise UsageError(f"--name: {problem}")
        cfg = dataclasses.replace(cfg, name=name)
    if schedule not in SCHEDULERS:
        raise ValueError(f"unknown schedule {schedule!r}")
    rule = scheduling or cfg.scheduling
    if rule not in SCHEDULING_RULES:
        raise UsageError(f"--scheduling {rule}: expected one of {', '.join(SCHEDULING_RULES)}")
    raw = {**cfg.raw, "scheduling": rule}
    if search_class(cfg.search_method).early_stopping and schedule == "mop-fixed":
        # its stops follow the order in which models reach a rung, which timing sets: a re-run
        # stopped other models, with other epochs (a user trial), which mop-fixed promises not to
        raise UsageError(f"--schedule mop-fixed (--reproducible): search.method {cfg.search_method} stops models "
                         "on results in the order they arrive, which timing sets, so a re-run would stop others; "
                         "drop --reproducible, or make it a grid or random search")
    if search_class(cfg.search_method).asks_during_run:
        if schedule != "mop":
            raise UsageError(f"--schedule {schedule}: search.method {cfg.search_method} adds models during the "
                             "run, which only the mop schedule can take")
        # the architectures (keras_json files read) and the normalised space, recorded with the run,
        # so that a resumed run asks for models without the grid file
        raw["resolved"] = {"architectures": [{"name": a.name, "spec": a.spec} for a in cfg.architectures],
                           "space": cfg.space}
    cfg = dataclasses.replace(cfg, scheduling=rule, raw=raw)
    say = log or (lambda line: None)
    started = time.perf_counter()
    plan, source, pack, control, preloading, notices = await _start_run(dsn, cfg, schedule, say, notify)
    hints = [h for h in (source.label_hint(), source.metric_hint(cfg.metric), source.validation_hint(cfg.metric)) if h]
    for hint in hints if notify else ():
        notify(hint)
    run_id = plan.run_id
    try:
        result = await drive(dsn, plan, progress_factory, heartbeat_seconds=heartbeat_seconds, control=control,
                             preloading=preloading)
    except TooLarge as exc:  # refused before any model was built: the new run leaves no trace
        async with connect(dsn) as conn:
            await housekeeping.remove_runs(conn, [run_id])
        # (the progress had named it: say where it went, a user trial looked for it)
        refused = TooLarge(f"{exc}; run {run_id} is removed, nothing trained")
        refused.run_id = None
        raise refused from None
    result.pack_reused = pack.reused
    result.check_seconds, result.pack_seconds = source.profile_seconds, pack.seconds
    result.wall_seconds = time.perf_counter() - started
    result.notices = notices + hints + result.notices
    return result


async def _start_run(dsn: str, cfg: RunConfig, schedule: str, say, notify):
    """The part of ``train`` before its coordinator: check, pack, create the run; the segments'
    sessions open meanwhile. Returns (plan, source, pack, control, preloading, notices); stopped
    once the run exists (closing this connection included), the run is abandoned (:func:`abandon`)."""
    plan = None
    try:
        async with connect(dsn) as conn:
            engine = await detect(conn)
            await catalog.check_access(conn)  # a role that may not use ctq is told so before any work
            segments, notice = await engine.segments(conn, cfg.segments, default_segments())
            notices = [n for n in (notice, shared_cores(segments, os.cpu_count() or 1, cfg.cores_per_segment)) if n]
            for line in notices if notify else ():
                notify(line)
            await check_connection_limit(conn, segments, cfg.source_path)
            # the segments' backends load Keras meanwhile (about 2 s each; Engine.preload); not before
            # a first install, which comes after the source check (bad input installs nothing)
            current = await catalog.is_current(conn, engine)
            preloading = asyncio.create_task(engine.preload(dsn, segments)) if current else None
            try:
                plan, source, pack, control, notes = await prepare_run(
                    conn, dsn, engine, cfg, segments, schedule, say, preloading=preloading is not None,
                    installed=current)
            except DataError as exc:
                await discard(preloading)
                raise exc.in_file(cfg.source_path) from None
            except BaseException:
                await discard(preloading)
                raise
            for line in notes if notify else ():
                notify(line)
            notices += notes
    except BaseException as exc:
        if plan is None:  # (no run, or prepare_run removed the one it created)
            raise
        await abandon(dsn, plan, exc, control=control, preloading=preloading)
    return plan, source, pack, control, preloading, notices


async def check_connection_limit(conn, segments: int, path: str | None = None) -> None:
    """ConfigError (exit 2, before anything is opened or written) when the server, or the role's
    CONNECTION LIMIT, cannot let this role hold a run's sessions at once: one per segment, the
    coordinator's control session and this one (a run of 150 segments on a server of 64 failed
    after packing, 'sorry, too many clients already', found by a user trial)."""
    need = segments + 2
    row = await conn.fetchrow(template("connection_limit.sql"))
    limits = [(row["server_limit"], "the server's max_connections (less the superusers' reserve)")]
    if row["role_limit"] is not None and row["role_limit"] >= 0:
        limits.append((row["role_limit"], "this role's CONNECTION LIMIT"))
    limit, what = min(limits)
    if need > limit:
        raise ConfigError(f"{segments} segments need {need} sessions at once (one a segment, and 2), but {what} "
                          f"allows {limit}: use at most {max(1, limit - 2)} segments", path=path, key="segments")


async def abandon(dsn: str, plan: RunPlan, exc: BaseException, *, control=None, preloading=None,
                  preloaded=None) -> NoReturn:
    """A run stopped before its coordinator started (``exc``: a signal, an error): its sessions
    closed, its end recorded (or it would look driven, stale, for ever), and an interruption
    raised as :class:`Interrupted` naming the run to resume (it said run_id null: a user trial)."""
    await discard(preloading)
    for conn in [*(preloaded or ()), control]:
        if conn is not None:
            conn.terminate()
    stopped = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
    resume = f"resume with `ctq train --resume {plan.run_id}`"
    with contextlib.suppress(Exception):
        async with connect(dsn) as conn:
            await catalog.finish_run(conn, plan.run_id, "interrupted" if stopped else "failed",
                                     f"cancelled; {resume}" if stopped else plain_text(f"{type(exc).__name__}: {exc}"))
    if stopped:
        error = Interrupted(f"run {plan.run_id} interrupted; {resume}")
        error.run_id = plan.run_id
        raise error from None
    raise exc


async def discard(preloading: asyncio.Task | None) -> None:
    """Stop a preload (Engine.preload) whose connections will not be used, and close them."""
    if preloading is None:
        return
    preloading.cancel()
    try:
        connections = await preloading
    except BaseException:  # noqa: BLE001 - cancelled, or failed: nothing to close then
        return
    for conn in connections:
        if conn is not None:
            conn.terminate()


async def prepare_run(conn, dsn: str, engine, cfg: RunConfig, segments: int, schedule: str, say,
                      preloading: bool = False, installed: bool = True):
    """Check the source and pack it (one moment of it), create the run: (its plan, the source's
    profile, the pack, its control connection, notes for the user); ``preloading``: the segments' sessions are open meanwhile (ensure_pack).
    ``installed``: this ctq's server code is installed; if not, the install or upgrade comes after
    the check, and the check reads nothing of ctq's (see inspect_source)."""
    say(f"checking {cfg.data.table}")
    async with engine.snapshot(dsn) as moment:  # the profile and the packing read one moment
        source = await inspect_source(moment.conn, cfg.data, engine, cfg.seed, reuse_profile=installed, log=say)
        await check_same_rows(dsn, engine, moment, qualified(source.schema, source.name), source.display_name,
                              source.is_table, "data.table")
        if any("keras_json" in a.spec for a in cfg.architectures):
            from ctq.model_check import check_models_fit

            check_models_fit(cfg, source.input_shape, source.n_outputs, cfg.data.task, source.index_size)
        if cfg.metric.startswith("val_") and source.rows == source.train_rows:
            raise DataError(f"data.validation_fraction: {cfg.data.validation_fraction} of the {source.rows} rows "
                            f"leaves no validation row, and metric {cfg.metric} is measured on them; use a larger "
                            "fraction or more rows, or a training metric (loss, accuracy, mae)")
        if source.train_rows < segments:
            raise DataError(f"data: {source.train_rows} training rows cannot fill {segments} segments; "
                            "use fewer segments (or a smaller validation_fraction)")
        if installing := await catalog.ensure_installed(conn, engine):
            say(installing)
        warm_from, warm_note = await warm_start_sources(conn, cfg, source) if cfg.warm_start else (None, None)
        say(f"packing {cfg.data.table} into {segments} segments")
        pack = await ensure_pack(conn, dsn, engine, cfg.data, source, segments, cfg.seed, moment, preloading)
    say(f"pack {pack.pack_id} {'reused (source unchanged)' if pack.reused else f'written in {pack.seconds:.1f}s'}: "
        f"{source.train_rows} rows to train on, {source.rows - source.train_rows} to validate"
        + (f"; {pack.other}" if pack.other else ""))
    if streams(cfg.memory_budget_mb, pack.stats):
        say(f"segments stream their data on every hop: about {segment_data_mib(pack.stats):.0f} MiB each "
            f"would not fit memory_budget_mb {cfg.memory_budget_mb}")
    # the run's control session, which holds its lock from the run's creation until its
    # coordinator takes it over (Coordinator, control=): never a moment when the run looks stale
    control = await open_connection(dsn, "ctq run control")
    try:
        run_id = await catalog.create_run(control, config=cfg, pack=pack, segments=segments, schedule=schedule,
                                          versions=versions(), warm_from=warm_from, lock=True)
    except BaseException:
        control.terminate()
        raise
    try:
        plan = await load_plan(conn, run_id)
    except BaseException:  # a run no coordinator will drive: not left behind as a stale one
        control.terminate()
        await housekeeping.remove_runs(conn, [run_id])
        raise
    say(f"run {run_id} ({cfg.name}): {plan.model_budget} models x {segments} segments x {cfg.epochs} "
        f"epochs, schedule {schedule}")
    return plan, source, pack, control, [warm_note] if warm_note else []


async def warm_start_sources(conn, cfg: RunConfig, source) -> tuple[dict[int, list[int]], str | None]:
    """``warm_start: RUN_ID``: for each model, the model of that run it starts from (the best ranked
    trained one of its architecture), as source -> models, and a note for the user (or None).
    ConfigError (exit 2, nothing written) when the run does not exist (or is not the user's), has
    no trained model of an architecture, trained on data of another shape than ``source``'s (the
    same layers on other inputs or classes have weights of other shapes: the run failed at its
    first hop, exit 1), or split the same source otherwise (:func:`warm_start_split`)."""
    if search_class(cfg.search_method).asks_during_run:
        raise ConfigError(f"cannot be combined with search.method: {cfg.search_method} (its models are asked "
                          "during the run)",
                          path=cfg.source_path, key="warm_start")
    if await catalog.get_run(conn, cfg.warm_start) is None:
        raise ConfigError(f"no run {cfg.warm_start} to start from (see `ctq runs`)", path=cfg.source_path,
                          key="warm_start")
    warm_pack = await catalog.run_pack(conn, cfg.warm_start)
    was, now = packed_model_io(warm_pack["stats"]), source.model_io
    if was != now:
        def io(shape, outputs, embedding):
            return (f"inputs of shape {list(shape)}, {outputs} output{'s' if outputs > 1 else ''}"
                    + (f", embeddings of {embedding} rows" if embedding else ""))
        raise ConfigError(f"run {cfg.warm_start}'s models take {io(*was)}; {cfg.data.table} gives {io(*now)}: "
                          "a warm start needs the same", path=cfg.source_path, key="warm_start")
    sources = await catalog.warm_sources(conn, cfg.warm_start, [a.spec for a in cfg.architectures])
    missing = [a.name for a, s in zip(cfg.architectures, sources) if s is None]
    if missing:
        raise ConfigError(f"run {cfg.warm_start} has no trained model of architecture {missing[0]!r} "
                          "(the same layers) to start from", path=cfg.source_path, key="warm_start")
    note = warm_start_split(cfg, source, warm_pack)
    by_arch = {a.name: s for a, s in zip(cfg.architectures, sources)}
    warm: dict[int, list[int]] = {}
    for m in cfg.models:
        warm.setdefault(by_arch[m.architecture.name], []).append(m.model_id)
    return warm, note


def warm_start_split(cfg: RunConfig, source, warm_pack) -> str | None:
    """The validation rows of a warm-started run must be rows its starting weights never trained
    on, or its validation metric is optimistic and its ranking wrong (a user trial: seed 0 after a
    run of seed 7 on the same table validated on 979 of 1241 rows the weights had trained on;
    val_mae 3951 against 4187 on fresh rows). A row's split follows from its key, seeded by
    search.seed, and the validation fraction (packing: a row is held out when its key mod 10^6
    is below the fraction's cut). On the same source, the earlier run's training rows are then
    outside this run's validation rows exactly when the seed is the same and the fraction no
    larger: otherwise ConfigError (exit 2), naming the settings that keep them apart. On another
    source ctq cannot know which rows the two share: a note (None where there is nothing to say)."""
    settings = warm_pack["settings"]
    run = cfg.warm_start
    seed, fraction = settings.get("seed"), settings.get("validation_fraction")
    if (warm_pack["source_schema"], warm_pack["source_name"]) != (source.schema, source.name):
        if not cfg.data.validation_fraction:
            return None
        return (f"warm_start: run {run} trained on {warm_pack['source_schema']}.{warm_pack['source_name']}; any of "
                f"its training rows that {source.display_name} holds too may be validation rows here, which its "
                "weights have seen: the validation metric is then optimistic")
    now = cfg.data.validation_fraction
    if seed == cfg.seed and now <= fraction:
        return None
    if seed != cfg.seed:
        seen, why = 1 - fraction, f"search.seed {cfg.seed} here, {seed} there"
    else:
        seen, why = (now - fraction) / now, f"validation_fraction {now:g} here, {fraction:g} there"
    raise ConfigError(f"run {run} trained on {source.display_name} split otherwise ({why}): about {seen:.0%} of this run's "
                      "validation rows would be rows its models trained on, and the validation metric optimistic; "
                      f"use search.seed: {seed} and a validation_fraction of at most {fraction:g}, as run {run} did",
                      path=cfg.source_path, key="warm_start")


async def run_to_resume(dsn: str, config: RunConfig, name: str | None = None) -> int | None:
    """``ctq train GRID --resume auto``: the newest run of ``config`` under ``name`` (default: the
    config's) if its work is not done (last_run.sql), else None (start a new run). Only the newest
    counts: a run left unfinished before a newer one was started (e.g. because its source changed)
    is passed over, and a run that failed only because models failed is not resumed night after night."""
    cfg = dataclasses.replace(config, name=name) if name else config
    async with connect(dsn) as conn:
        return await catalog.run_to_resume(conn, fingerprint(cfg))


async def resume(dsn: str, run_id: int | None = None, config: RunConfig | str | None = None,
                 progress_factory=None, *, name: str | None = None, schedule: str | None = None,
                 scheduling: str | None = None, keep_pack: bool = False, log=None, notify=None) -> TrainResult:
    """Continue a run that did not finish: from its last completed hops, none repeated or lost.

    The run goes on with its pack. If the source has changed since it was packed (its content
    fingerprint), the models would go on learning rows that are no longer there: DataError
    (exit 2, nothing changed) unless ``keep_pack``, which resumes on the pack as it was and says
    so in the result's notices.

    Without ``run_id``, picks the newest unfinished run of ``config`` under ``name`` (the run name
    is part of the configuration's fingerprint, so ``GRID --name X --resume`` finds what
    ``GRID --name X`` started). A run keeps its configuration, name and schedule: a ``config``,
    ``name``, ``schedule`` or ``scheduling`` (also a ``scheduling:`` written in the grid file) that
    disagrees with the run's is refused rather than ignored.

    ``notify(message)``, as for :func:`train`, is called before training with each notice known
    by then (the pack kept, checkpoints restored after a crash, which class a metric is of).
    """
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    if cfg is not None and name:
        cfg = dataclasses.replace(cfg, name=name)
    resumed = RunResumed(run_id)
    try:
        plan, changed = await _reopen(dsn, resumed, cfg, name, schedule, scheduling, keep_pack, log)
        plan, lost = await restore_checkpoints(dsn, plan)  # the server crashed since: back to the checkpoints
    except BaseException as exc:
        if resumed.control is not None:
            resumed.control.terminate()
        if isinstance(exc, CtqError) and exc.run_id is None:  # the run the error concerns (--json's run_id)
            exc.run_id = resumed.run_id
        raise
    early = [n for n in (metric_class_note(plan.metric, plan.pack["stats"].class_values),  # as its start said
                         changed and f"{changed}: run {plan.run_id} resumed on its pack as it was (--keep-pack)",
                         lost) if n]
    for line in early if notify else ():
        notify(line)
    ended_unrecorded = not plan.work_left
    result = await drive(dsn, plan, progress_factory, control=resumed.control)
    if ended_unrecorded:
        result.notices.insert(0, f"run {plan.run_id} had trained every hop before its coordinator stopped; "
                                 "its end is recorded now")
    result.notices = early + result.notices
    return result


@dataclass
class RunResumed:
    """What :func:`resume` knows of the run as it goes: its id (given, or found by name), and the
    session holding its lock once taken (handed to its coordinator)."""

    run_id: int | None
    control: asyncpg.Connection | None = None


async def _reopen(dsn: str, resumed: RunResumed, cfg: RunConfig | None, name: str | None, schedule: str | None,
                  scheduling: str | None, keep_pack: bool, log) -> tuple[RunPlan, str | None]:
    """The checks of :func:`resume`, then the run reopened under its lock (taken on
    ``resumed.control`` before anything changes): (its plan, what changed in its source or None).
    A concurrent resume of the same run (two cron jobs) finds the lock taken and is refused,
    exit 2, having changed nothing (it ended as a failed run, exit 1, after a warm-up: a user
    trial)."""
    async with connect(dsn) as conn:
        run_id = resumed.run_id
        if run_id is None:
            run_id = await catalog.last_unfinished_run(conn, fingerprint(cfg))
            if run_id is None:
                raise NotFound(f"no unfinished run of {cfg.source_path} named {cfg.name!r} to resume")
            resumed.run_id = run_id
        run = await catalog.require_run(conn, run_id)
        if not run["may_change"]:
            raise PermissionDenied(f"run {run_id} belongs to {run['run_by']} and is shared with you read-only: "
                                   "only its owner or an administrator (ctq_admin) can resume it")
        if name and name != run["name"]:
            raise UsageError(f"--name {name}: run {run_id} is named {run['name']!r}; a resumed run keeps its name")
        if schedule and schedule != run["schedule"]:
            raise UsageError(f"--schedule {schedule}: run {run_id} runs schedule {run['schedule']!r}; "
                             "a resumed run keeps its schedule")
        recorded = await conn.fetchval(template("run_scheduling.sql"), run_id)
        if scheduling and scheduling != recorded:
            raise UsageError(f"--scheduling {scheduling}: run {run_id} schedules by {recorded!r}; "
                             "a resumed run keeps its scheduling")
        if cfg is not None and "scheduling" in cfg.raw and cfg.scheduling != recorded:
            raise UsageError(f"{cfg.source_path}:scheduling: run {run_id} schedules by {recorded!r}; "
                             "a resumed run keeps its scheduling")
        if cfg is not None and not name:  # GRID --resume RUN_ID: the grid as the run named it
            cfg = dataclasses.replace(cfg, name=run["name"])
        if cfg is not None and fingerprint(cfg) != run["config_fingerprint"]:
            raise UsageError(f"{cfg.source_path}: run {run_id} was started from a different configuration; "
                             f"resume it with `ctq train --resume {run_id}` alone")
        if run["status"] == "succeeded":
            raise NotFound(f"run {run_id} already succeeded; nothing to resume")
        live = UsageError(f"run {run_id} is still being driven by a live ctq process")  # (exit 2, as ctq rm's)
        if run["alive"]:
            raise live
        engine = await detect(conn)
        # before the run's lock: once this session holds it, the run is live, and an install (an
        # upgrade of the server code, the first command after a new version's) waits for no run
        # to be live: the resume of a stale run refused itself as 'training now' (a user trial)
        if installing := await catalog.ensure_installed(conn, engine):
            (log or (lambda line: None))(installing)
        resumed.control = await open_connection(dsn, f"ctq run {run_id} control")
        if not await catalog.lock_run(resumed.control, run_id):  # taken since (another resume at once)
            raise live
        await use_pack(conn, run["pack_id"])  # the resuming role must still be able to read the source
        plan = await load_plan(conn, run_id)  # (reopen_run below changes nothing a plan holds)
        if not plan.work_left and run["status"] == "failed":  # it ended, and a failed model is not retried
            raise NotFound(f"run {run_id} has nothing left to train: every model ended ({len(plan.failed)} "
                           f"failed: see ctq models {run_id})")
        # (a run whose last hops committed after its coordinator died has no hop left, yet its end is
        # not recorded: the resume records it, with nothing to train and no source to check)
        changed = None
        if plan.work_left:
            (log or (lambda line: None))(f"checking whether the source of run {run_id} has changed")
            changed = await changed_since_packed(conn, engine, run["pack_id"])
        if changed and not keep_pack:
            raise DataError(f"data.table: {changed}: run {run_id} would go on training on the rows as they "
                            f"were then; start a new run, or resume on the old pack with `ctq train --resume "
                            f"{run_id} --keep-pack`")
        await catalog.reopen_run(conn, run_id)
    return plan, changed


def segment_data_mib(stats: PackStats) -> float:
    """MiB of decoded data one segment holds when it caches: its training share plus the whole
    validation set (float32 features and labels)."""
    width = stats.input_dim + 1
    rows = stats.train_rows / max(1, stats.segments or 1) + stats.validation_rows
    return rows * width * 4 / 2**20


def balanced_weights(counts: list[int]) -> list[float]:
    """Class weights rows / (classes x rows of the class), scikit-learn's "balanced" rule: every
    class then weighs as much in the loss as a balanced label would make it."""
    total, classes = sum(counts), len(counts)
    return [total / (classes * c) for c in counts]


def streams(budget_mb: int | None, stats: PackStats) -> bool:
    """A segment whose data would not fit ``memory_budget_mb`` trains by streaming its buffers on
    every hop instead of caching them (slower: each hop reads and decodes its data again)."""
    return budget_mb is not None and segment_data_mib(stats) > budget_mb


def restore_search(plan: RunPlan) -> Search:
    """The run's search in the state the catalog's history leaves it (:meth:`Search.restore`).
    RunFailed when the catalog's decisions are not the rule's."""
    try:
        return search_class(plan.method).restore(plan)
    except ValueError as exc:
        raise RunFailed(f"run {plan.run_id}: {exc}; the catalog's decisions cannot be resumed") from None


async def start_search(dsn: str, plan: RunPlan) -> tuple[Search, RunPlan]:
    """The run's search as the catalog leaves it (:func:`restore_search`), having asked for (and
    recorded) the models due now: at the start of a run, the first ones of a search that asks
    during the run; on a resume, those a dead coordinator did not get to ask. Returns it with the
    plan those models are part of."""
    search = restore_search(plan)
    live = len(plan.specs) - len(plan.finished) - len(plan.stopped)
    new = search.new_models(live, max(plan.specs, default=0) + 1)
    if new:
        specs = dict(plan.specs)
        async with connect(dsn) as conn:
            for model_id, point in new:
                spec = plan.asked_model(model_id, point, {m.name for m in specs.values()})
                await catalog.insert_model(conn, plan.run_id, model_id, spec)
                specs[model_id] = spec
        plan = dataclasses.replace(plan, specs=specs)
    return search, plan


# Coordinator sessions a run may lose to a server that lost its working states (a crash) before
# the run fails: each costs the training since each model's last checkpoint.
STATE_LOSSES = 3


def coordinator_for(dsn: str, plan: RunPlan, search: Search, progress: Progress | None, heartbeat_seconds: float,
                    preloaded=None, control=None) -> Coordinator:
    """A coordinator session over ``plan``: its scheduler in the state the catalog leaves it,
    ``search`` the run's (see :func:`start_search`); ``preloaded``: segment connections opened
    ahead, see Engine.preload; ``control``: a connection holding the run's lock (drive)."""
    rule = {"scheduling": plan.scheduling} if plan.schedule == "mop" else {}
    scheduler = SCHEDULERS[plan.schedule](sorted(plan.specs), plan.segments, plan.epochs, plan.seed,
                                          completed=plan.completed, observed=plan.observed, **rule)
    for model_id in plan.failed:
        scheduler.fail_model(model_id)
    for model_id in plan.stopped:
        scheduler.stop_model(model_id)
    return Coordinator(dsn, plan, scheduler, search, engine_named(plan.engine), progress, preloaded=preloaded,
                       control=control, heartbeat_seconds=heartbeat_seconds, max_retries=plan.retries)


async def restore_checkpoints(dsn: str, plan: RunPlan) -> tuple[RunPlan, str | None]:
    """The run back at its models' checkpoints where a server crash took their working state, and
    its plan as the catalog then says; with a notice of what was rolled back (None: nothing)."""
    async with connect(dsn) as conn:
        rolled = await catalog.restore_checkpoints(conn, plan.run_id, plan.segments)
        if rolled:
            plan = await load_plan(conn, plan.run_id)
    if not rolled:
        return plan, None
    models = ", ".join(f"{r['model_id']} (from its checkpoint after epoch {r['epochs']})" if r["epochs"]
                       else f"{r['model_id']} (from the start: no checkpoint)" for r in rolled)
    return plan, (f"the server lost the working state of {len(rolled)} model(s) (its host crashed, or their files "
                  f"were removed): {sum(r['lost_hops'] for r in rolled)} hops are trained again: models {models}")


async def drive(dsn: str, plan: RunPlan, progress_factory=None, heartbeat_seconds: float = 5.0,
                preloaded=None, control=None, preloading: asyncio.Task | None = None) -> TrainResult:
    """Coordinator sessions over a run in the catalog, until it ends; records how it ended.

    A session that finds that the server lost working states (:class:`StatesLost`: it crashed and
    restarted) stops; the run goes back to those models' checkpoints and a new session goes on
    (at most ``STATE_LOSSES`` times), so a server crash costs at most the training since each
    model's last checkpoint (ctq.coordinator.Coordinator._checkpoints). ``control``: the
    connection holding the new run's lock since its creation (prepare_run), handed to the first
    coordinator; ``preloading``: the task opening the segments' sessions (Engine.preload), whose
    connections are ``preloaded``.

    Stopped before its coordinator starts (a signal while the sessions open, an error): see
    :func:`abandon`."""
    try:
        if preloading is not None:
            preloaded = await preloading
        search, plan = await start_search(dsn, plan)
        progress: Progress | None = progress_factory(plan) if progress_factory else None
    except BaseException as exc:
        await abandon(dsn, plan, exc, control=control, preloading=preloading, preloaded=preloaded)
    coordinator = coordinator_for(dsn, plan, search, progress, heartbeat_seconds, preloaded, control)
    started = time.perf_counter()
    outcome = Outcome(segments=plan.segments)
    notices: list[str] = []
    try:
        with progress if progress is not None else contextlib.nullcontext():
            for losses in range(STATE_LOSSES + 1):
                try:
                    outcome.add(await coordinator.run())
                    break
                except StatesLost as lost:
                    outcome.add(lost.outcome)
                    if losses == STATE_LOSSES:
                        raise RunFailed(f"run {plan.run_id}: the server lost the models' working states "
                                        f"{losses + 1} times ({lost})") from None
                    await coordinator.release()
                    plan, notice = await restore_checkpoints(dsn, plan)
                    if notice is None:  # no model lost its working state to a crash: not ours to mend
                        raise RunFailed(f"run {plan.run_id}: {lost}, and its checkpoint does not explain it") from None
                    notices.append(notice)
                    coordinator = coordinator_for(dsn, plan, restore_search(plan), progress, heartbeat_seconds)
    except (asyncio.CancelledError, KeyboardInterrupt):
        await coordinator.finish("interrupted", "cancelled; resume with `ctq train --resume "
                                 f"{plan.run_id}`")
        error = Interrupted(f"run {plan.run_id} interrupted; resume with `ctq train --resume {plan.run_id}`")
        error.run_id = plan.run_id
        raise error from None
    except BaseException as exc:
        try:
            await coordinator.finish("failed", plain_text(f"{type(exc).__name__}: {exc}"))
        except Exception as lost:  # noqa: BLE001 - the server itself is gone (a crash, a restart)
            if is_missing_privilege(lost):  # the role lost ctq's use mid-run (ctq revoke): the run
                if not is_missing_privilege(exc):  # stays unfinished, said below as a hop's refusal is
                    exc = lost
            elif not is_transient(lost):
                raise
            else:
                error = DatabaseError(f"run {plan.run_id} stopped: cannot talk to the database "
                                      f"({plain_text(str(lost))}); once it is back, resume it with "
                                      f"`ctq train --resume {plan.run_id}`")
                error.run_id = plan.run_id
                raise error from exc
        if is_missing_privilege(exc):  # found inside the run (a hop, a catalog write): exit 2, as anywhere
            denied = permission_denied(exc, run_user(dsn))
            exc = PermissionDenied(f"run {plan.run_id} stopped: {denied}; once granted, resume it with "
                                   f"`ctq train --resume {plan.run_id}`")
        elif isinstance(exc, asyncpg.PostgresError):  # e.g. a model that cannot even be built at warm-up
            exc = RunFailed(f"run {plan.run_id} failed: {plain_text(str(exc))}")
        if isinstance(exc, CtqError):
            exc.run_id = plan.run_id
        raise exc
    failed = dict(outcome.failed_models)
    failed.update({m: "failed in an earlier session" for m in plan.failed})
    if failed:
        status, message = "failed", f"{len(failed)} of {len(plan.specs)} models failed"
    else:
        status, message = "succeeded", None
    await coordinator.finish(status, message)
    async with connect(dsn) as conn:
        board = await catalog.leaderboard(conn, plan.run_id)
        run = await catalog.get_run(conn, plan.run_id)
        stops = [d for d in await catalog.run_decisions(conn, plan.run_id) if d["decision"] == "stop"]
        figures = catalog.schedule_shares(await catalog.segment_rows(conn, plan.run_id), plan.segments)
    best = next((row for row in board if row["score"] is not None), None)
    return TrainResult(
        run_id=plan.run_id, status=status, name=plan.name,
        best_model_id=best["model_id"] if best else None, best_model=best["name"] if best else None,
        best_metric=best["score"] if best else None, metric=plan.metric,
        wall_seconds=time.perf_counter() - started, hops=len(outcome.results), retries=outcome.retries,
        utilization=figures["utilization"] or 0.0, compute_share=figures["compute_share"] or 0.0,
        failed_models=failed,
        leaderboard=board, pack_reused=True,
        hop_results=outcome.results, expected_hop_seconds=outcome.expected, schedule_seconds=figures["span_seconds"] or 0.0, engine=plan.engine,
        run_hops=run["hops"], run_wall_seconds=run["wall_seconds"],
        stopped_models={d["model_id"]: f"after epoch {d['epoch']}: {d['reason']}" for d in stops},
        notices=notices,
    )


def run_user(dsn: str) -> str | None:
    """The role a DSN connects as: its user, else PGUSER, else the OS user (asyncpg's defaults,
    as libpq's); None for a DSN that cannot be read."""
    import getpass

    try:
        parts = urllib.parse.urlsplit(dsn)
        named = parts.username or urllib.parse.parse_qs(parts.query).get("user", [None])[0]
    except ValueError:
        return None
    try:
        return named or os.environ.get("PGUSER") or getpass.getuser()
    except (KeyError, OSError):  # an OS user without a name
        return None


async def install(dsn: str, python_path: list[str] | None = None) -> str:
    """Install or upgrade; a ``python_path`` that the server cannot use is refused before anything
    is written (recorded, it would only fail the next run's first hop)."""
    async with connect(dsn) as conn:
        for path in python_path or ():
            check_server_directory(path)
        await catalog.install(conn, python_path)
        return await catalog.installed_sha(conn)


async def grant(dsn: str, role: str, *, admin: bool = False, revoke: bool = False) -> tuple[str, bool]:
    """``ctq grant`` / ``ctq revoke``: see ``catalog.grant``. Returns (the group role, whether the
    membership changed)."""
    async with connect(dsn) as conn:
        return await catalog.grant(conn, role, admin=admin, revoke=revoke)


async def share(dsn: str, run_id: int, roles: list[str], *, revoke: bool = False) -> list[str]:
    """Share a run read-only with roles (or stop): see ``catalog.share``. Returns its roles now."""
    async with connect(dsn) as conn:
        await catalog.check_access(conn)
        return await catalog.share(conn, run_id, roles, revoke=revoke)


def check_server_directory(path: str) -> None:
    """``path`` is resolved by the database server (maybe another machine): it must be absolute.
    Whether it exists there is checked by ``ctq install`` as the server's OS user."""
    if not os.path.isabs(path):
        raise UsageError(f"--python-path {path}: expected an absolute path (the server resolves it, not this shell)")


async def runs(dsn: str, limit: int = 50, status: str | None = None, name: str | None = None) -> list[dict]:
    """Runs, newest first. A run whose coordinator is gone while it says 'running' is reported as
    'stale' (``ctq train --resume`` continues it), with the wall time it had when its heartbeat stopped.
    ``status`` and ``name`` (a shell-style pattern: ``*``, ``?``) filter before ``limit`` applies."""
    async with connect(dsn) as conn:
        return await catalog.list_runs(conn, limit, status,
                                       housekeeping.name_pattern(name) if name is not None else None)


async def installed(dsn: str) -> bool:
    """Whether ctq is installed in the database of ``dsn`` (for a listing that finds nothing)."""
    async with connect(dsn) as conn:
        return await catalog.installed_sha(conn) is not None


async def models(dsn: str, run_id: int) -> list[dict]:
    async with connect(dsn) as conn:
        await catalog.require_run(conn, run_id)
        return await catalog.leaderboard(conn, run_id)


async def measured_run(dsn: str, run_id: int):
    """A run's measured hop schedule (:class:`ctq.simulate.MeasuredRun`) for ``ctq simulate --replay``.
    Raises NotFound for an unknown run or one without hops, UsageError for a run whose models did
    not all exist from its start or did not all train to its end: its search stopped models early,
    or asked for them during the run (tpe, one per segment at a time): a replay trains every model
    from the start to the last epoch, a schedule no such run could have (a user trial)."""
    from statistics import median

    from ctq.simulate import MeasuredRun

    async with connect(dsn) as conn:
        run = await catalog.require_run(conn, run_id)
        rows = await conn.fetch(template("hop_durations.sql"), run_id)
        stopped = [m for m in await catalog.run_models(conn, run_id) if m["status"] == "stopped"]
        shares = catalog.schedule_shares(await catalog.segment_rows(conn, run_id), run["segments"])
        search = recorded_search(await conn.fetchrow(template("run_settings.sql"), run_id))
    method = search_class(search.get("method"))
    if method.asks_during_run:
        raise UsageError(f"--replay {run_id}: its search ({method.method}) asked for its models during the run, one "
                         "at a time as segments freed up, and a replay would have them all from the start; replay a "
                         "run of grid or random search")
    if stopped:  # the simulator trains every model for every epoch: not what this run did
        raise UsageError(f"--replay {run_id}: its search stopped {len(stopped)} models early, and a replay "
                         f"trains every model for all {run['epochs']} epochs; replay a run without early stopping")
    if not rows:
        raise NotFound(f"run {run_id} has no completed hops to replay")
    gaps = [r["gap"] for r in rows if r["gap"] is not None]
    return MeasuredRun(hops=tuple((r["model_id"], r["segment"], r["seconds"]) for r in rows), epochs=run["epochs"],
                       segments=run["segments"], gap_seconds=max(0.0, median(gaps)) if gaps else 0.0,
                       span_seconds=shares["span_seconds"])


async def report(dsn: str, run_id: int, out: str, full_curves: int | None = None) -> int:
    """Write the run's HTML report (ctq.report) to ``out``, replacing the file if there is one (as
    pg_dump -f and psql -o do) only once the whole report is written. ``full_curves``: the best
    models whose learning curves are drawn in full (default report.FULL_CURVES). Returns its size
    in bytes."""
    from ctq import files
    from ctq import report as rep

    if out != "-":  # "-": stdout, as for psql -o and most tools
        files.target(out, "--out")  # before any database work
    async with connect(dsn) as conn:
        data = await rep.load(conn, run_id)
    # drawn in a thread: the event loop stays free to take Ctrl-C or SIGTERM (drawn in it, a signal
    # waited for the drawing, then the file was replaced anyway: a user trial)
    document = (await asyncio.to_thread(rep.render_html, data, full_curves=rep.FULL_CURVES if full_curves is None
                                        else full_curves)).encode()
    if out == "-":
        sys.stdout.buffer.write(document)
        sys.stdout.flush()
        return len(document)
    with files.replacing(out, "--out", ".html") as temporary, open(temporary, "wb") as f:
        f.write(document)
    return len(document)


async def compare(dsn: str, run_a: int, run_b: int) -> dict:
    """Two runs side by side (ctq.report.compare): headline figures and configuration differences."""
    from ctq import report as rep

    async with connect(dsn) as conn:
        return rep.compare(await rep.load(conn, run_a), await rep.load(conn, run_b))


async def runs_to_remove(dsn: str, run_ids: list[int]) -> list[dict]:
    """What ``ctq rm`` would delete (checked, see housekeeping.runs_to_remove)."""
    async with connect(dsn) as conn:
        return await housekeeping.runs_to_remove(conn, run_ids)


async def remove_runs(dsn: str, run_ids: list[int]) -> list[dict]:
    async with connect(dsn) as conn:
        return await housekeeping.remove_runs(conn, run_ids)


async def packs(dsn: str, *, for_gc: bool = False) -> dict:
    """Packs with sizes and users, and orphaned pack tables (housekeeping.list_packs); ``for_gc``
    first checks that this role may drop packs."""
    async with connect(dsn) as conn:
        if for_gc and await catalog.check_access(conn):
            await housekeeping.check_gc_allowed(conn)
        return await housekeeping.list_packs(conn)


async def gc_packs(dsn: str, candidates: list[dict]) -> list[dict]:
    async with connect(dsn) as conn:
        return await housekeeping.gc_packs(conn, candidates)


def with_note(first: str | None, notes: list[str]) -> list[str]:
    """``notes`` after ``first`` (what ensure_installed did), if any."""
    return ([first] if first else []) + notes


async def _scoring_setup(conn, run_id: int):
    """Engine, segments and their cores for scoring run ``run_id``'s models: the same as a run on
    this database would get (PostgreSQL: one virtual segment per core; Greenplum: its primary
    segments). A database without ctq has no run to score: NotFound, and nothing installed there."""
    engine = await detect(conn)
    if not await catalog.check_access(conn):
        raise await catalog.missing_run(conn, str(run_id))
    segments, _ = await engine.segments(conn, None, default_segments())
    installing = await catalog.ensure_installed(conn, engine)
    return engine, segments, segment_cores(segments, os.cpu_count() or 1), installing


async def predict(dsn: str, run_id: int, *, table: str, out: str, id_column: str, model_id: int | None = None,
                  proba: bool = False, replace: bool = False) -> dict:
    """``ctq predict``: see :func:`ctq.scoring.predict`."""
    from ctq import scoring

    async with connect(dsn) as conn:
        engine, segments, cores, installing = await _scoring_setup(conn, run_id)
        result = await scoring.predict(conn, dsn, engine, segments, cores, run_id, table=table, out=out,
                                       id_column=id_column, model_id=model_id, proba=proba, replace=replace)
    result["notes"] = with_note(installing, result["notes"])
    return result


async def evaluate(dsn: str, run_id: int, *, table: str, model_id: int | None = None) -> dict:
    """``ctq evaluate``: see :func:`ctq.scoring.evaluate`."""
    from ctq import scoring

    async with connect(dsn) as conn:
        engine, segments, cores, installing = await _scoring_setup(conn, run_id)
        result = await scoring.evaluate(conn, dsn, engine, segments, cores, run_id, table=table, model_id=model_id)
    result["notes"] = with_note(installing, result["notes"])
    return result


async def validation(dsn: str, run_id: int, out: str, *, replace: bool = False) -> dict:
    """``ctq validation``: the run's validation rows (every column) as the new table ``out``
    (``table`` or ``schema.table``; ``replace`` drops an existing one in the same transaction).
    Raises NotFound for an unknown run, DataError when its source has changed since it was packed,
    UsageError for an existing ``out`` without ``replace``."""
    from ctq.config import parse_table_name

    try:
        schema, name = parse_table_name(out)
    except ValueError as exc:
        raise UsageError(f"--out {out!r}: {exc}") from None
    dest = qualified(schema, name) if schema else quote_ident(name)
    async with connect(dsn) as conn:
        await catalog.require_run(conn, run_id)
        engine = await detect(conn)
        pack = await catalog.run_pack(conn, run_id)
        async with conn.transaction():
            if await conn.fetchval(template("relation_oid.sql"), dest) is not None:
                if not replace:
                    raise UsageError(f"--out {out}: table exists; use --replace to replace it")
                await conn.execute(render("drop_table.sql", table=dest))
            rows = await write_validation_rows(conn, engine, pack, dest)
            where = await conn.fetchval(template("load_where.sql"), dest)
    return {"run_id": run_id, "out": where, "rows": rows}


async def export(dsn: str, run_id: int, path: str, *, model_id: int | None = None, force: bool = False) -> dict:
    """``ctq export``: a model of a run (default: its best) as a standalone .keras file (see
    :mod:`ctq.export`)."""
    from ctq import export as keras_export
    from ctq.scoring import trained_model

    keras_export.check_path(path, force)
    async with connect(dsn) as conn:
        await catalog.check_access(conn)
        model = await trained_model(conn, run_id, model_id)
        engine = await detect(conn)
        installing = await catalog.ensure_installed(conn, engine)  # the server code reads the state: this ctq's
        state = await engine.read_state(conn, run_id, model_id=model.model_id)
    if state is None:  # (it wrote a traceback: a user trial)
        raise RunFailed(f"model {model.model_id} of run {run_id} has trained, but its state after its recorded hops "
                        "is not stored (a working state lost since, e.g. in a crash of the server's host): `ctq train "
                        f"--resume {run_id}` takes it back to its last checkpoint")
    keras_export.save(model, state, path)
    return {"run_id": run_id, "model_id": model.model_id, "model": model.name, "path": os.path.abspath(path),
            "task": model.task, "class_values": model.class_labels,
            "notes": with_note(installing, model.notes)}

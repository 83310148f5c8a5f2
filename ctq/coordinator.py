"""The asyncio driver: one connection per segment, one targeted query at a time on each.

The scheduler (pure, :mod:`ctq.scheduler`) decides *what* runs; this module only issues the
queries and feeds results back. The moment a segment's query returns, the scheduler is asked for
new hops, so no segment waits on another (MOP); with the BSP scheduler the same loop reproduces
MADlib's rounds, because that scheduler only releases a round when the previous one is done.

Each hop is a targeted query that trains on one segment's rows (the engine's train_query.sql)
and one ``ctq.record_hop`` call that commits the model's new state with its hop row: on PostgreSQL
both are one statement, on Greenplum the record is a second statement; either way a hop is
recorded entirely or not at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import asyncpg

from ctq import catalog
from ctq.connection import all_or_none, connect as open_connection
from ctq.engines import Engine
from ctq.engines.base import HopStatements
from ctq.memory import Budget, check_fits
from ctq.errors import DatabaseError, RunFailed, from_database, is_missing_privilege, plain_text
from ctq.indb import SQLSTATE_MODEL, SQLSTATE_STATE_LOST
from ctq.metrics import Metric
from ctq.rules import HopRequest, ModelSpec, SizesRequest
from ctq.scheduler import Hop, Scheduler
from ctq.search import Search
from ctq.sql import template

if TYPE_CHECKING:
    from ctq.api import RunPlan

# SQLSTATE classes worth a retry: connection (08), operator intervention such as a terminated
# backend or a cancelled statement (57), insufficient resources (53), transaction rollback (40).
TRANSIENT_SQLSTATE_CLASSES = ("08", "57", "53", "40")
CANCEL_WAIT_SECONDS = 5.0
DEFAULT_CHECKPOINT_SECONDS = 300.0  # grid.yaml checkpoint_minutes: 5
DEFAULT_RETRIES = 5  # grid.yaml retries


class StatesLost(Exception):
    """A hop found that the server no longer has the working state its model's recorded hops
    produced: a crash took it (working_states_files.sql: an operating-system crash on PostgreSQL, a
    server crash on Greenplum, whose crash recovery empties its unlogged hop_states). The
    session stops; the run goes back to its checkpoints and goes on (api.drive). ``outcome``: what
    the session did until then."""

    outcome: Outcome | None = None


@dataclass(frozen=True)
class HopResult:
    hop: Hop
    loss: float | None
    metric: float | None
    rows: int
    compute_seconds: float
    val_loss: float | None
    val_metric: float | None
    wall_seconds: float  # as seen by the client: dispatch + state transfer + training + commit
    epoch: dict | None = None  # the last hop of an epoch: the epoch's row of ctq.epochs

    @property
    def train_loss(self) -> float | None:
        """The catalog's name (ctq.epochs, Metric.column): the epoch's loss (the mean of its hops'
        over their rows) after its last hop, else the hop's own."""
        return self.epoch["train_loss"] if self.epoch else self.loss

    @property
    def train_metric(self) -> float | None:
        return self.epoch["train_metric"] if self.epoch else self.metric


class Progress(Protocol):
    """What the coordinator reports as it goes (the rich display implements it)."""

    def hop_started(self, hop: Hop) -> None: ...
    def hop_finished(self, result: HopResult) -> None: ...
    def hop_retried(self, hop: Hop, reason: str) -> None: ...
    def model_failed(self, model_id: int, reason: str) -> None: ...
    def model_stopped(self, model_id: int, epochs_done: int, reason: str) -> None: ...
    def model_added(self, model_id: int, name: str) -> None: ...
    def segment_warming(self, segment: int, steps: int) -> None: ...
    def segment_warm(self, segment: int, seconds: float) -> None: ...
    def hop_estimates(self, seconds: dict[int, float]) -> None: ...


class NoProgress:
    def segment_warming(self, segment: int, steps: int) -> None:
        pass

    def segment_warm(self, segment: int, seconds: float) -> None:
        pass

    def hop_estimates(self, seconds: dict[int, float]) -> None:
        pass

    def hop_started(self, hop: Hop) -> None:
        pass

    def hop_finished(self, result: HopResult) -> None:
        pass

    def hop_retried(self, hop: Hop, reason: str) -> None:
        pass

    def model_failed(self, model_id: int, reason: str) -> None:
        pass

    def model_stopped(self, model_id: int, epochs_done: int, reason: str) -> None:
        pass

    def model_added(self, model_id: int, name: str) -> None:
        pass


@dataclass
class Outcome:
    """What one coordinator session did (a resumed run has several)."""

    results: list[HopResult] = field(default_factory=list)
    failed_models: dict[int, str] = field(default_factory=dict)
    stopped_models: dict[int, str] = field(default_factory=dict)  # by an early-stopping search: the reason
    retries: int = 0
    wall_seconds: float = 0.0
    segments: int = 0
    expected: dict[int, float] = field(default_factory=dict)  # model id -> warm-up's estimated hop seconds

    def add(self, session: Outcome | None) -> None:
        """Count another session's hops, retries and schedule time in with these."""
        if session is None:
            return
        self.results.extend(session.results)
        self.failed_models.update(session.failed_models)
        self.stopped_models.update(session.stopped_models)
        self.retries += session.retries
        self.wall_seconds += session.wall_seconds
        self.expected.update(session.expected)


def is_transient(exc: BaseException) -> bool:
    """A failure worth a reconnect and a retry: the connection or the server went away.

    One ``InterfaceError`` is deliberately not: two operations at once on one connection is a
    misuse of the client, and retrying it only hid the bug (issue 8).
    """
    if isinstance(exc, (OSError, asyncpg.exceptions.ConnectionDoesNotExistError,
                        asyncpg.exceptions.InterfaceError)) and not _is_client_misuse(exc):
        return True
    if _is_broken_protocol(exc):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES


def _is_client_misuse(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.exceptions.InterfaceError) and "another operation is in progress" in str(exc)


def _is_broken_protocol(exc: BaseException) -> bool:
    """asyncpg's "cannot switch to state N; another operation (2) is in progress": the connection
    is in PROTOCOL_ERROR_CONSUME (2) because it received a message it could not place, as the
    FATAL of a backend terminated between two statements is (the socket's end follows a moment
    later). Seen in CI: a hop issued on such a segment connection failed its model."""
    return isinstance(exc, asyncpg.exceptions.InternalClientError) and "another operation (2) is in progress" in str(exc)


def segment_cores(segments: int, cpus: int, per_segment: int | None = None) -> list[list[int]]:
    """Give each segment its own share of the cores (wrapping around when segments > cores)."""
    per_segment = per_segment or max(1, cpus // segments)
    return [[(s * per_segment + i) % cpus for i in range(per_segment)] for s in range(segments)]


def shared_cores(segments: int, cpus: int, per_segment: int | None) -> str | None:
    """A note when ``cores_per_segment`` asks for more cores than there are: the segments then
    share cores (segment_cores wraps around) and run slower than the setting suggests."""
    if per_segment is None or segments * per_segment <= cpus:
        return None
    return (f"cores_per_segment {per_segment} x {segments} segments asks for {segments * per_segment} cores, but this "
            f"machine has {cpus}: the segments share them (set cores_per_segment to at most "
            f"{max(1, cpus // segments)} for a core of their own)")


class Coordinator:
    def __init__(self, dsn: str, plan: RunPlan, scheduler: Scheduler, search: Search, engine: Engine,
                 progress: Progress | None = None, *, preloaded: list[asyncpg.Connection | None] | None = None,
                 control: asyncpg.Connection | None = None, heartbeat_seconds: float = 5.0, max_retries: int = DEFAULT_RETRIES,
                 retry_backoff: float = 0.5):
        """A session driving run ``plan`` (ctq.api.RunPlan: the run as the catalog records it; its
        pack, models, metric, checkpoint rule...) on ``engine``: ``scheduler`` decides which hop
        runs next, in the state the catalog leaves it; ``search`` (ctq.search) is the run's, its
        state rebuilt from the catalog: an early-stopping one is asked after every epoch on the
        run's metric (results a dead predecessor left undecided are decided first), one that asks
        for models during the run is told each model's end and asked for new ones then.
        ``preloaded``: segment connections opened ahead (Engine.preload), taken over at warm-up;
        ``control``: the connection that created the run and took its lock in that transaction
        (catalog.create_run), taken over as this session's control connection, so that the run is
        never without a live holder of its lock between its creation and its first hop;
        a failed hop is retried ``max_retries`` times, ``retry_backoff`` seconds apart and doubling.

        What the run settles (see ctq.config): ``stream`` (the segments read their buffers on every
        hop instead of caching them), ``class_weights`` (a training weight per class index),
        ``warm`` (the models start from another run's final weights, stored as their state: their
        first hop keeps the weights and starts the optimizer afresh), ``checkpoint_seconds`` (a
        model's state after an epoch is written as its checkpoint, which survives a crash, when its
        last one is this old; also after its last epoch, and after every epoch when a search
        decides on epochs: :meth:`_checkpoints`)."""
        self.plan = plan
        self.dsn = dsn
        self.run_id = plan.run_id
        self.segments = plan.segments
        self.epochs = plan.epochs
        self.cores = plan.cores
        self.pack = plan.pack
        self.stats = plan.pack["stats"].for_server()  # in every hop's parameters
        self.models: dict[int, ModelSpec] = dict(plan.specs)  # grows as a search asks
        self.stream = plan.stream
        self.class_weights = plan.class_weights
        self.metric = plan.metric
        self.warm = plan.warm
        self.scheduler = scheduler
        self.search = search
        self.decisions = len(plan.decisions)
        self.pending = list(search.undecided(plan))
        self.engine = engine
        self.progress = progress or NoProgress()
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.heartbeat_seconds = heartbeat_seconds
        self.statements: list[HopStatements] = []  # each segment's, built once the engine is attached (run)
        self.connections: list[asyncpg.Connection | None] = [None] * self.segments
        self.preloaded = list(preloaded or [None] * self.segments)
        self.backends: list[int | None] = [None] * self.segments  # each segment connection's server pid
        self.warmup_estimates: dict[int, dict[str, float]] = {}  # segment -> compile key -> hop seconds
        self.control: asyncpg.Connection | None = None
        self.handed_control = control  # holds the run's lock already (catalog.create_run)
        # asyncpg allows one operation at a time per connection. The heartbeat and the main loop
        # both write the catalog; without this lock their writes collided, the collision was taken
        # for a dropped connection, and the reconnect let go of the run's lock (issue 8).
        self.control_lock = asyncio.Lock()
        self.driving = False  # once this session held the run's lock; only then may it record the end
        self.attempts: dict[tuple[int, int, int], int] = {}
        self.app_prefix = f"ctq run {self.run_id} segment "
        self.checkpointed_at: dict[int, float] = {}  # model -> when this session last wrote its checkpoint
        self.started = time.monotonic()

    def _backoff(self, attempt: int) -> float:
        return min(self.retry_backoff * 2 ** (attempt - 1), 8.0)

    async def _open_control(self) -> None:
        """The catalog connection; it also holds the run's lock for as long as it lives."""
        handed, self.handed_control = self.handed_control, None
        if handed is not None and not handed.is_closed():
            self.control, self.driving = handed, True
            return
        conn = await open_connection(self.dsn, f"ctq run {self.run_id} control")
        for attempt in range(1, 11):  # a killed predecessor's session may take a moment to end
            if await catalog.lock_run(conn, self.run_id):
                break
            await asyncio.sleep(0.5)
        else:
            await conn.close()
            raise RunFailed(f"run {self.run_id} is being driven by another ctq process")
        self.control = conn
        self.driving = True

    async def _catalog(self, fn, *args):
        """Run a catalog write on the control connection, one at a time, reconnecting (and taking
        the run's lock again) only after a real connection failure."""
        async with self.control_lock:
            for attempt in range(1, self.max_retries + 2):
                try:
                    if self.control is None or self.control.is_closed():
                        await self._open_control()
                    return await fn(self.control, *args)
                except Exception as exc:  # noqa: BLE001 - classified below
                    if not (is_transient(exc) or self.engine.is_transient(exc)) or attempt > self.max_retries \
                            or _being_cancelled():
                        raise
                    if self.control is not None:
                        self.control.terminate()
                    self.control = None
                    await asyncio.sleep(self._backoff(attempt))

    def _params(self, segment: int, **values) -> str:
        """The JSON parameters of a targeted query (see indb.step_final)."""
        return HopRequest(pack_id=self.pack["pack_id"], task=self.pack["settings"]["task"], stats=self.stats,
                          cores=self.cores[segment], stream=self.stream, class_weights=self.class_weights,
                          metric=Metric(self.metric).kind, **values).to_json()

    async def _connect(self, segment: int) -> asyncpg.Connection:
        """A segment's connection, warmed up: its backend has decoded the segment's data and built
        every model with a hop left there before its first hop (all segments at once), so hops
        carry per-hop costs only. A new backend late in a run (a reconnect, a resume) builds only
        the models still to come there; with none, it is not warmed up."""
        conn, self.preloaded[segment] = self.preloaded[segment], None
        if conn is not None and not conn.is_closed():
            await conn.execute(template("application_name.sql"), f"{self.app_prefix}{segment}")
        else:
            conn = await self.engine.segment_connection(self.dsn, f"{self.app_prefix}{segment}")
        self.backends[segment] = conn.get_server_pid()
        self.connections[segment] = conn  # closed with the others if the warm-up fails
        live = {i: m for i, m in sorted(self.models.items()) if self.scheduler.hop_left_on(i, segment)}
        if not live:
            return conn
        groups: dict[str, list[tuple[int, ModelSpec]]] = {}  # the models that share compiled steps
        for model_id, model in live.items():
            groups.setdefault(model.step_key(), []).append((model_id, model))
        keys = sorted(groups)
        built = [(groups[k][0][1].architecture, groups[k][0][1].hyperparameters) for k in keys]
        await self._check_memory(conn, segment, built, [groups[k] for k in keys])
        params = self._params(segment, action="warmup", models=built)
        self.progress.segment_warming(segment, len(keys))
        started = time.perf_counter()
        estimates = await conn.fetchval(self.statements[segment].warmup, params)
        self.progress.segment_warm(segment, time.perf_counter() - started)
        if estimates is not None:
            self.warmup_estimates[segment] = dict(zip(keys, json.loads(estimates)))
        return conn

    async def _check_memory(self, conn: asyncpg.Connection, segment: int, built: list,
                            groups: list[list[tuple[int, ModelSpec]]]) -> None:
        """Refuse (TooLarge, exit 2) a model whose training would not fit the segment's memory,
        from sizes counted in the segment's backend before it builds anything (ctq.memory)."""
        row = await conn.fetchrow(self.statements[segment].sizes, SizesRequest(
            models=built, stats=self.stats, task=self.pack["settings"]["task"]).to_json())
        sizes = json.loads(row["sizes"])
        budget = Budget.of(self.plan.memory_budget_mb, sizes["memory_bytes"], row.get("sharing") or self.segments)
        check_fits([[(i, m.name, m.hyperparameters.optimizer) for i, m in group] for group in groups], sizes["models"],
                   budget, self.plan.data_bytes, segment)

    def _expect_from_warmup(self, outcome: Outcome) -> None:
        """Tell the scheduler each model's estimated hop (its mean over the segments' warm-up
        timings), so that the cost-aware rule orders models before any hop of theirs is timed."""
        for model_id, model in self.models.items():
            key = model.step_key()
            seconds = [t[key] for t in self.warmup_estimates.values() if t.get(key, 0) > 0]
            if seconds and model_id not in self.scheduler.failed | self.scheduler.stopped:
                outcome.expected[model_id] = sum(seconds) / len(seconds)
                self.scheduler.expect(model_id, outcome.expected[model_id])
        self.progress.hop_estimates(dict(outcome.expected))

    async def _segment_connection(self, segment: int) -> asyncpg.Connection:
        conn = self.connections[segment]
        if conn is None or conn.is_closed():
            conn = await self._connect(segment)
        return conn

    async def _recorded(self, hop: Hop) -> HopResult | None:
        """Before a retry: the hop as the catalog recorded it, if its commit went through although
        its reply never came (the connection dropped after COMMIT), else None. The failed
        connection's backend is stopped first, so that the answer cannot change behind us."""
        pid = self.backends[hop.segment]
        for _ in range(40):
            if pid is None or not await self._catalog(catalog.end_backend, pid, f"{self.app_prefix}{hop.segment}"):
                break
            await asyncio.sleep(0.25)
        else:
            raise RunFailed(f"the backend of segment {hop.segment} (pid {pid}) does not end; cannot tell whether "
                            f"hop (model {hop.model_id}, epoch {hop.epoch}, segment {hop.segment}) was recorded")
        self.backends[hop.segment] = None
        row = await self._catalog(catalog.recorded_hop, self.run_id, hop.model_id, hop.epoch, hop.segment)
        if row is None:
            return None
        return HopResult(hop, row["loss"], row["metric"], row["rows"], row["compute_seconds"], row["val_loss"],
                         row["val_metric"], row["wall_seconds"])

    async def _run_hop(self, hop: Hop, delay: float = 0.0) -> HopResult:
        if delay:
            await asyncio.sleep(delay)
        if self.attempts.get((hop.model_id, hop.epoch, hop.segment)):  # a retry: was it done after all?
            recorded = await self._recorded(hop)
            if recorded is not None:
                return recorded
        conn = await self._segment_connection(hop.segment)
        model = self.models[hop.model_id]
        epochs_done, visited = self.scheduler.progress(hop.model_id)
        hops = epochs_done * self.segments + visited  # what the model's stored state has trained
        first = self.warm and hops == 0
        params = self._params(hop.segment, action="train", arch=model.architecture,
                              hyper=model.hyperparameters, seed=model.seed, evaluate=hop.last_of_epoch,
                              hops=hops, warm=first,
                              state_file=[self.run_id, hop.model_id] if self.engine.working_states_in_files else None)
        checkpoint = self._checkpoints(hop)
        t0 = time.perf_counter()
        row = await self.engine.run_hop(conn, self.statements[hop.segment], self.run_id, hop.model_id, hop.epoch,
                                        hop.last_of_epoch, params, hops, checkpoint)
        wall = time.perf_counter() - t0
        if row is None:
            raise RunFailed(f"model {hop.model_id} of run {self.run_id} is missing from ctq.models")
        if checkpoint:
            self.checkpointed_at[hop.model_id] = time.monotonic()
        return HopResult(hop, row["loss"], row["metric"], row["rows"], row["compute_seconds"],
                         row["val_loss"], row["val_metric"], wall)

    def _checkpoints(self, hop: Hop) -> bool:
        """Whether ``hop`` writes its model's checkpoint (state_tables.sql) rather than its working
        state: at the end of an epoch, when it is the model's last epoch (its final state), when a
        search decides after epochs (a decision is never made on a state a crash can take), or when
        the model's last checkpoint is ``checkpoint_seconds`` old. A server crash then costs each
        model at most that much training, plus its unfinished epoch."""
        if not hop.last_of_epoch:
            return False
        if hop.epoch == self.epochs - 1 or self.search.early_stopping:
            return True
        return time.monotonic() - self.checkpointed_at.get(hop.model_id, self.started) >= self.plan.checkpoint_seconds

    async def _epoch_row(self, model_id: int, epoch: int) -> dict:
        """A model's row of ctq.epochs for ``epoch`` (0-based), recorded by that epoch's last hop."""
        row = await self._catalog(catalog.epoch_metrics, self.run_id, model_id, epoch)
        if row is None:
            raise RunFailed(f"model {model_id} of run {self.run_id}: epoch {epoch + 1} is not recorded")
        return row

    async def _decide(self, model_id: int, epochs_done: int, row: dict, outcome: Outcome) -> None:
        """Ask the search about a model that has completed ``epochs_done`` epochs (``row``: that
        epoch's of ctq.epochs); record the decision (a rung's) before any new hop starts, and stop
        the model if so decided."""
        decision = self.search.decide(model_id, epochs_done, Metric(self.metric).value(row))
        if decision is None:
            return
        await self._catalog(catalog.record_decision, self.run_id, self.decisions, decision, self.metric,
                            self.search.name)
        self.decisions += 1
        if not decision.promoted:
            self.scheduler.stop_model(model_id)
            outcome.stopped_models[model_id] = decision.reason
            self.progress.model_stopped(model_id, epochs_done, decision.reason)

    async def _finished(self, model_id: int, value: float | None) -> None:
        """A model trained its last epoch (``value``: the run's metric then) or failed (None): tell
        a search that asks during the run, and start the models it asks for in its place."""
        if not self.search.asks_during_run:
            return
        self.search.model_ended(model_id, value)
        for new_id, point in self.search.new_models(self.scheduler.live, max(self.models) + 1):
            spec = self.plan.asked_model(new_id, point, {m.name for m in self.models.values()})
            await self._catalog(catalog.insert_model, self.run_id, new_id, spec)
            self.models[new_id] = spec
            self.scheduler.add_model(new_id)
            self.progress.model_added(new_id, spec.name)

    async def _heartbeat(self) -> None:
        """Every ``heartbeat_seconds``, the run's heartbeat on the control connection, which holds
        the run's lock: a control session the server ended is replaced and the lock taken again
        (:meth:`_catalog`). Raises when that fails, which stops the run (see :meth:`run`)."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await self._catalog(catalog.heartbeat, self.run_id)

    async def _on_failure(self, hop: Hop, exc: BaseException, outcome: Outcome) -> float | None:
        """Fail the model (deterministic error) or return the delay before retrying the hop."""
        key = (hop.model_id, hop.epoch, hop.segment)
        conn = self.connections[hop.segment]
        if self.engine.reconnect_after_error and conn is not None and not conn.is_closed():
            conn.terminate()  # never reuse a Greenplum session after an error inside PL/Python
            self.connections[hop.segment] = None
        if is_missing_privilege(exc):  # not the model's failure: every hop would fail so; stop the run,
            raise exc                  # which resumes once the privilege is granted (api.drive says so)
        if getattr(exc, "sqlstate", None) == SQLSTATE_STATE_LOST:
            raise StatesLost(plain_text(getattr(exc, "message", None) or str(exc))) from exc
        if getattr(exc, "sqlstate", None) == SQLSTATE_MODEL or not (is_transient(exc) or self.engine.is_transient(exc)):
            reason = plain_text(getattr(exc, "message", None) or str(exc))
            self.scheduler.fail_model(hop.model_id)
            outcome.failed_models[hop.model_id] = reason
            await self._catalog(catalog.set_model_status, self.run_id, hop.model_id, "failed", reason)
            self.progress.model_failed(hop.model_id, reason)
            await self._finished(hop.model_id, None)
            return None
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if conn is not None and not conn.is_closed():
            conn.terminate()
        self.connections[hop.segment] = None
        if self.attempts[key] > self.max_retries:
            failed = (f"hop (model {hop.model_id}, epoch {hop.epoch}, segment {hop.segment}) failed "
                      f"{self.attempts[key]} times, last: {plain_text(str(exc))}")
            if isinstance(from_database(exc), DatabaseError):  # unreachable, out of sessions: exit 3
                raise DatabaseError(f"{failed}; the database cannot be used now: once it can, resume the run with "
                                    f"`ctq train --resume {self.run_id}`") from exc
            raise RunFailed(failed) from exc
        outcome.retries += 1
        # the server's words, or for the client's side of a connection what it means: a bare
        # "[Errno 2] No such file or directory" was all a server being down said (a user trial)
        self.progress.hop_retried(hop, str(from_database(exc)) if not getattr(exc, "sqlstate", None) else str(exc))
        return self._backoff(self.attempts[key])

    async def run(self) -> Outcome:
        outcome = Outcome(segments=self.segments)
        t0 = time.perf_counter()
        async with self.control_lock:
            await self._open_control()
            await self.engine.attach(self.control)
        self.statements = [self.engine.hop_statements(s, self.pack["pack_id"], self.pack["table_name"], self.stream)
                           for s in range(self.segments)]
        # backends still training for a dead predecessor of this session: stop them first
        await self._catalog(catalog.terminate_orphans, self.app_prefix)
        for model_id, epochs_done in self.pending:  # results a dead predecessor did not decide on
            await self._decide(model_id, epochs_done, await self._epoch_row(model_id, epochs_done - 1), outcome)
        self.pending = []
        heartbeat = asyncio.create_task(self._heartbeat())
        running: dict[asyncio.Task, Hop] = {}
        try:
            await all_or_none(self._connect(s) for s in range(self.segments))
            self._expect_from_warmup(outcome)
            t0 = time.perf_counter()  # wall time of the schedule itself, not of the warm-up
            while not self.scheduler.done:
                if _being_cancelled():  # a Ctrl-C that a library turned into a query error
                    raise asyncio.CancelledError()
                for hop in self.scheduler.next_hops():
                    self.progress.hop_started(hop)
                    running[asyncio.create_task(self._run_hop(hop))] = hop
                if not running:
                    raise RunFailed("scheduler has work left but nothing can run (internal error)")
                finished, _ = await asyncio.wait([*running, heartbeat], return_when=asyncio.FIRST_COMPLETED)
                if heartbeat in finished:  # the run's lock could not be kept (or taken again): driving on
                    heartbeat.result()  # unheld, another process could resume it beside this one
                    finished.discard(heartbeat)
                for task in finished:
                    hop = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        result = task.result()
                        if hop.last_of_epoch:  # what the progress shows and the search decides on
                            result = replace(result, epoch=await self._epoch_row(hop.model_id, hop.epoch))
                        self.scheduler.complete(hop, result.wall_seconds)
                        outcome.results.append(result)
                        self.progress.hop_finished(result)
                        if hop.last_of_epoch and hop.epoch == self.epochs - 1:
                            await self._catalog(catalog.set_model_status, self.run_id, hop.model_id, "succeeded")
                            if self.search.asks_during_run:
                                await self._finished(hop.model_id, Metric(self.metric).value(result.epoch))
                        elif hop.last_of_epoch and self.search.early_stopping:
                            await self._decide(hop.model_id, hop.epoch + 1, result.epoch, outcome)
                    else:
                        delay = await self._on_failure(hop, exc, outcome)
                        if delay is not None:  # the hop stays on its segment and runs again
                            running[asyncio.create_task(self._run_hop(hop, delay))] = hop
        except StatesLost as lost:
            lost.outcome = outcome
            raise
        finally:
            outcome.wall_seconds = time.perf_counter() - t0
            heartbeat.cancel()
            if running:  # stopping early: have the server cancel the training statements, and wait
                try:  # for it (a hop in the middle of a jit compile notices only when that ends)
                    await asyncio.wait_for(self._catalog(catalog.cancel_backends, self.app_prefix), timeout=5)
                    await asyncio.wait(running, timeout=CANCEL_WAIT_SECONDS)
                except Exception:  # noqa: BLE001 - best effort; closing the connections follows
                    pass
            for task in running:
                task.cancel()
            await asyncio.gather(*running, heartbeat, return_exceptions=True)
            await self._close_segments()
        return outcome

    async def release(self) -> None:
        """Let go of the run (its lock) and every connection without recording an end: another
        session goes on with the run (api.drive, after :class:`StatesLost`)."""
        await self._close_segments()
        await self._close_control()
        self.driving = False

    async def finish(self, status: str, message: str | None = None) -> None:
        """Record the run's end while still holding its lock, then let go of everything. A session
        that never got the lock records nothing: the run belongs to the session that drives it."""
        try:
            if self.driving or self.handed_control is not None:  # (a handed one holds the lock: adopted)
                await self._catalog(catalog.finish_run, self.run_id, status, message)
        finally:
            await self._close_segments()
            await self._close_control()

    async def _close_control(self) -> None:
        for conn in (self.control, self.handed_control):
            if conn is not None:
                await _close(conn)
        self.control = self.handed_control = None

    async def _close_segments(self) -> None:
        await asyncio.gather(*(_close(c) for c in self.connections + self.preloaded if c is not None))
        self.connections = [None] * self.segments
        self.preloaded = [None] * self.segments


def _being_cancelled() -> bool:
    """True once this task was asked to stop, even if the CancelledError got converted on the way
    (asyncpg turns a cancelled query into QueryCanceledError, which would look transient)."""
    task = asyncio.current_task()
    return bool(task is not None and getattr(task, "cancelling", lambda: 0)())


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=2)
    except Exception:  # noqa: BLE001 - a connection that is already broken
        conn.terminate()

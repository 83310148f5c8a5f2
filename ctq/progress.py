"""Progress of a run: a live display on a terminal (rich), plain log lines everywhere else.

:class:`LiveProgress` is used when stdout is a TTY and ``--json`` is off. Otherwise (cron, make,
``> run.log 2>&1``) :class:`LogProgress` writes one plain line per event to stderr, flushed at once,
so a log shows a live run: the model epochs with their metrics and an ETA (every hop with
``--verbose``). Neither writes terminal escape codes into a file.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ctq.coordinator import HopResult
from ctq.errors import plain_text
from ctq.metrics import Metric
from ctq.scheduler import Hop

MAX_MODEL_ROWS = 20


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class Eta:
    """Seconds left in a run, from the warm-up on: each model's hops left times the warm-up's
    estimate of its hop (the coordinator's ``hop_estimates``), corrected by how long this session's
    hops have really taken against their estimates, over the segments. (Extrapolating the first
    hops' throughput instead said 1m06s for a run that ended 11 s later: the first hops compile.)
    A hop has taken its segment's time since the segment's previous hop ended: its wall time and
    the turn-around before it, which hops of a few milliseconds spend as much time in (counting the
    hop alone, a user trial saw 'ETA 11s' with 16 s left)."""

    def __init__(self, plan, clock=time.monotonic):
        self.segments = plan.segments
        self.per_model = plan.segments * plan.epochs
        done = Counter(m for m, _, _ in plan.completed)
        ended = set(plan.failed) | set(plan.stopped)
        self.left = {m: 0 if m in ended else self.per_model - done[m] for m in plan.specs}
        self.unborn = max(0, plan.model_budget - len(plan.specs)) * self.per_model  # the search's models to come
        self.expected: dict[int, float] = {}
        self.taken = self.estimated = 0.0
        self.clock = clock
        self.ended_at: dict[int, float] = {}  # segment -> when its last hop ended

    def estimates(self, seconds: dict[int, float]) -> None:
        """The warm-up's estimates, given as the hops start: every segment's time counts from now."""
        self.expected = {m: s for m, s in seconds.items() if s > 0}
        self.ended_at = dict.fromkeys(range(self.segments), self.clock())

    def finished(self, model_id: int, seconds: float, segment: int | None = None) -> None:
        """A hop of ``model_id`` ended on ``segment`` after ``seconds`` of wall time."""
        now = self.clock()
        self.left[model_id] = max(0, self.left.get(model_id, 0) - 1)
        if model_id in self.expected:
            since = now - self.ended_at[segment] if segment in self.ended_at else seconds
            self.taken += max(seconds, since)
            self.estimated += self.expected[model_id]
        if segment is not None:
            self.ended_at[segment] = now

    def added(self, model_id: int) -> None:
        self.left[model_id] = self.per_model
        self.unborn = max(0, self.unborn - self.per_model)

    def ended(self, model_id: int) -> None:
        self.left[model_id] = 0

    def seconds(self) -> float | None:
        if not self.expected:
            return None
        mean = sum(self.expected.values()) / len(self.expected)
        work = sum(n * self.expected.get(m, mean) for m, n in self.left.items()) + self.unborn * mean
        return work * (self.taken / self.estimated if self.estimated else 1.0) / self.segments


class LiveProgress:
    """Implements the coordinator's Progress protocol on top of a rich Live display."""

    def __init__(self, plan, console: Console | None = None):
        """``plan`` is the run's :class:`ctq.api.RunPlan` (a resumed run starts where it stopped)."""
        self.run_id = plan.run_id
        self.config = plan
        self.segments = plan.segments
        self.names = {m: spec.name for m, spec in plan.specs.items()}
        self.epochs_done = {m: 0 for m in plan.specs}
        self.hops_in_epoch = {m: 0 for m in plan.specs}
        for (model_id, epoch), hops in Counter((m, e) for m, e, _ in plan.completed).items():
            if hops == plan.segments:
                self.epochs_done[model_id] = max(self.epochs_done[model_id], epoch + 1)
            else:
                self.hops_in_epoch[model_id] = hops
        self.score: dict[int, float] = {}
        self.failed: dict[int, str] = {m: "earlier session" for m in plan.failed}
        self.busy: dict[int, tuple[Hop, float]] = {}
        self.warming: dict[int, tuple[int, float]] = {}  # segment -> (compiled steps, since)
        self.eta = Eta(plan)
        self.hops = len(plan.completed)
        self.started = time.monotonic()
        # rendered at every refresh (4 a second), so the clocks tick between events too
        self.live = Live(console=console or Console(), refresh_per_second=4, transient=False,
                         get_renderable=self._render)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.refresh()
        return self.live.__exit__(*exc)

    # -- Progress protocol
    def segment_warming(self, segment: int, steps: int) -> None:
        self.warming[segment] = (steps, time.monotonic())

    def segment_warm(self, segment: int, seconds: float) -> None:
        self.warming.pop(segment, None)

    def hop_estimates(self, seconds: dict[int, float]) -> None:
        self.eta.estimates(seconds)

    def hop_started(self, hop: Hop) -> None:
        self.busy[hop.segment] = (hop, time.monotonic())
        self.live.refresh()

    def hop_finished(self, result: HopResult) -> None:
        hop = result.hop
        self.busy.pop(hop.segment, None)
        self.hops += 1
        self.eta.finished(hop.model_id, result.wall_seconds, hop.segment)
        self.hops_in_epoch[hop.model_id] += 1
        if hop.last_of_epoch:
            self.epochs_done[hop.model_id] = hop.epoch + 1
            self.hops_in_epoch[hop.model_id] = 0
            score = self._score(result)
            if score is not None:
                self.score[hop.model_id] = score
        self.live.refresh()

    def hop_retried(self, hop: Hop, reason: str) -> None:
        self.busy.pop(hop.segment, None)
        self.live.console.print(f"[yellow]retrying model {hop.model_id} on segment {hop.segment}: {reason}")

    def model_failed(self, model_id: int, reason: str) -> None:
        self.failed[model_id] = reason
        self.eta.ended(model_id)
        self.live.console.print(f"[red]model {self.names.get(model_id, model_id)} failed: {reason}")
        self.live.refresh()

    def model_added(self, model_id: int, name: str) -> None:
        self.names[model_id] = name
        self.epochs_done[model_id] = self.hops_in_epoch[model_id] = 0
        self.eta.added(model_id)
        self.live.refresh()

    def model_stopped(self, model_id: int, epochs_done: int, reason: str) -> None:
        self.eta.ended(model_id)
        self.live.console.print(f"model {self.names.get(model_id, model_id)} stopped after epoch {epochs_done}: "
                                f"{reason}")
        self.live.refresh()

    # -- rendering
    def _score(self, result: HopResult) -> float | None:
        return getattr(result, Metric(self.config.metric).column)

    def _best(self) -> tuple[int, float] | None:
        if not self.score:
            return None
        pick = max if self.config.metric_mode == "max" else min
        model_id = pick(self.score, key=self.score.__getitem__)
        return model_id, self.score[model_id]

    def _render(self):
        total_hops = len(self.names) * self.segments * self.config.epochs
        elapsed = time.monotonic() - self.started
        best = self._best()
        left = self.eta.seconds()
        eta = ("warming up" if self.warming or (left is None and not self.hops) else
               f"ETA {_duration(left)}" if left is not None else "ETA -")
        head = Text.assemble(
            (f"run {self.run_id} ", "bold"), f"{self.config.name}: {self.hops}/{total_hops} hops, ",
            f"{_duration(elapsed)}, {eta}, best {self.config.metric} = ",
            (f"{best[1]:.4f} ({self.names[best[0]]})" if best else "-", "bold green"),
        )
        segs = Table(box=None, show_header=True, header_style="dim")
        segs.add_column("segment")
        segs.add_column("training")
        segs.add_column("for")
        for s in range(self.segments):
            if s in self.busy:
                hop, since = self.busy[s]
                segs.add_row(str(s), f"{self.names[hop.model_id]} (epoch {hop.epoch + 1})",
                             f"{time.monotonic() - since:.1f}s")
            elif s in self.warming:
                steps, since = self.warming[s]
                segs.add_row(str(s), f"[cyan]warming up: building {steps} compiled step{'s' if steps > 1 else ''}",
                             f"{time.monotonic() - since:.1f}s")
            else:
                segs.add_row(str(s), "[dim]idle", "")
        models = Table(box=None, show_header=True, header_style="dim")
        for col in ("model", "epochs", self.config.metric):
            models.add_column(col)
        order = sorted(self.names, key=lambda m: (m not in self.score, -self.score.get(m, 0)
                                                  if self.config.metric_mode == "max" else self.score.get(m, 0)))
        for model_id in order[:MAX_MODEL_ROWS]:
            done = self.epochs_done[model_id]
            status = "[red]failed" if model_id in self.failed else (
                f"{done}/{self.config.epochs}" + (f" +{self.hops_in_epoch[model_id]}/{self.segments}"
                                                  if self.hops_in_epoch[model_id] else ""))
            models.add_row(self.names[model_id], status, _fmt(self.score.get(model_id)))
        if len(order) > MAX_MODEL_ROWS:
            models.add_row(f"... {len(order) - MAX_MODEL_ROWS} more", "", "")
        return Group(head, segs, models)


def log_line(text: str, stream: TextIO | None = None) -> None:
    """One timestamped plain line on stderr, flushed: what a cron log or ``tail -f`` shows."""
    print(f"{time.strftime('%H:%M:%S')} {plain_text(text)}", file=stream or sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class LogProgress:
    """Implements the coordinator's Progress protocol as plain lines on stderr (no terminal).

    The ETA extrapolates this session's hop throughput over the hops left, counted from the first
    hop (not from the warm-up), so it is meaningful from the first completed epoch on.
    """

    def __init__(self, plan, verbose: bool = False, stream: TextIO | None = None):
        self.plan = plan
        self.verbose = verbose
        self.stream = stream
        self.total = plan.model_budget * plan.segments * plan.epochs
        for model_id in plan.stopped:  # stopped by the search in an earlier session: no hops left
            self.total -= plan.segments * plan.epochs - sum(m == model_id for m, _, _ in plan.completed)
        self.done = len(plan.completed)
        self.session_start_done = self.done
        self.first_hop_at: float | None = None
        self.started = time.monotonic()
        self.eta = Eta(plan)
        self.steps: dict[int, int] = {}
        self.metric_name = Metric(plan.metric).compiled(plan.pack["settings"]["task"])  # train_/val_metric's
        self.names = {m: spec.name for m, spec in plan.specs.items()}  # and the models a search adds

    def _say(self, text: str) -> None:
        log_line(text, self.stream)

    def __enter__(self):
        left = self.total - self.done
        resumed = f", resuming after {self.done} hops" if self.done else ""
        self._say(f"run {self.plan.run_id} ({self.plan.name}): warming up {self.plan.segments} segments, "
                  f"{left} hops to go{resumed}")
        return self

    def __exit__(self, *exc):
        self._say(f"run {self.plan.run_id}: {self.done}/{self.total} hops after "
                  f"{_duration(time.monotonic() - self.started)}")
        return False

    def _eta(self) -> str:
        left = self.eta.seconds()
        if left is not None:
            return f"ETA {_duration(left)}"
        hops = self.done - self.session_start_done  # no warm-up estimates: this session's throughput
        if not hops or self.first_hop_at is None:
            return "ETA -"
        per_hop = (time.monotonic() - self.first_hop_at) / hops
        return f"ETA {_duration(per_hop * (self.total - self.done))}"

    # -- Progress protocol
    def segment_warming(self, segment: int, steps: int) -> None:
        self.steps[segment] = steps

    def segment_warm(self, segment: int, seconds: float) -> None:
        steps = self.steps.get(segment, 0)
        self._say(f"run {self.plan.run_id}: segment {segment} warmed up in {seconds:.1f}s "
                  f"({steps} compiled step{'s' if steps != 1 else ''})")

    def hop_estimates(self, seconds: dict[int, float]) -> None:
        self.eta.estimates(seconds)

    def hop_started(self, hop: Hop) -> None:
        if self.first_hop_at is None:
            self.first_hop_at = time.monotonic()
            self._say(f"run {self.plan.run_id}: warm-up done in {_duration(self.first_hop_at - self.started)}, "
                      f"training, {self._eta()}")

    def hop_finished(self, result: HopResult) -> None:
        hop = result.hop
        self.done += 1
        self.eta.finished(hop.model_id, result.wall_seconds, hop.segment)
        name = self.names.get(hop.model_id, hop.model_id)
        where = f"{self.done}/{self.total} hops"
        if self.verbose:
            self._say(f"hop: model {hop.model_id} ({name}) epoch {hop.epoch + 1} segment {hop.segment}: "
                      f"{result.wall_seconds:.2f}s, loss {_fmt(result.loss)} [{where}]")
        if hop.last_of_epoch:  # the epoch's train loss and metric, as ctq.epochs and the leaderboard have them
            self._say(f"model {hop.model_id} ({name}) epoch {hop.epoch + 1}/{self.plan.epochs}: "
                      f"loss {_fmt(result.train_loss)} {self.metric_name} {_fmt(result.train_metric)} "
                      f"val_loss {_fmt(result.val_loss)} val_{self.metric_name} {_fmt(result.val_metric)} "
                      f"[{where}, {_duration(time.monotonic() - self.started)}, {self._eta()}]")

    def hop_retried(self, hop: Hop, reason: str) -> None:
        self._say(f"retrying model {hop.model_id} on segment {hop.segment}: {' '.join(reason.split())}")

    def model_failed(self, model_id: int, reason: str) -> None:
        self.eta.ended(model_id)
        self._say(f"model {model_id} ({self.names.get(model_id, model_id)}) failed: {' '.join(reason.split())}")

    def model_added(self, model_id: int, name: str) -> None:
        self.names[model_id] = name
        self.eta.added(model_id)
        if self.verbose:
            self._say(f"model {model_id} ({name}) asked for by the search")

    def model_stopped(self, model_id: int, epochs_done: int, reason: str) -> None:
        self.total -= (self.plan.epochs - epochs_done) * self.plan.segments  # hops it will not train
        self.eta.ended(model_id)
        self._say(f"model {model_id} ({self.names.get(model_id, model_id)}) stopped after epoch "
                  f"{epochs_done}: {reason}")


LOAD_LOG_SECONDS = 15.0  # without a terminal, a line this often while `ctq load` reads


@contextlib.contextmanager
def load_progress(path: str, stream: TextIO | None = None):
    """A ``ctq load`` progress callback ``(what, bytes read, size on disk)``: a bar with the bytes
    read, the rate and the time left on a terminal (stderr), else a plain line every
    ``LOAD_LOG_SECONDS`` (nothing for a file read faster than that)."""
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn(), console=Console(file=stream), transient=True)
        tasks: dict[str, int] = {}

        def update(what: str, done: int, size: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(f"{what} {path}", total=size or None)
            bar.update(tasks[what], completed=done)

        with bar:
            yield update
        return
    started: dict[str, float] = {}
    said = [time.monotonic()]

    def log(what: str, done: int, size: int) -> None:
        now = time.monotonic()
        started.setdefault(what, now)
        if now - said[0] >= LOAD_LOG_SECONDS:
            said[0] = now
            rate = done / max(now - started[what], 1e-9) / 1e6
            share = f" of {size / 1e6:.1f} MB ({done / size:.0%})" if size else ""
            log_line(f"ctq load: {what} {path}: {done / 1e6:.1f} MB{share}, {rate:.1f} MB/s", stream)

    yield log

"""Makespan simulator for the MOP and BSP schedules, without a database.

Answers "how much would asynchronous hopping save on this grid?" before (``ctq simulate``) or after
(:func:`replay` on measured hop times) a run, and how much MOP's cost-aware rule saves over its
random one. Every schedule makes exactly the decisions of :class:`ctq.scheduler.MopScheduler` (either
``scheduling`` rule) and :class:`ctq.scheduler.BspScheduler` driven by a clock at which the
coordinator completes every hop that ends at an instant before asking for new ones, so a simulated
makespan is the one those schedulers would produce with the same hop durations.

Durations are an ``(M, S)`` array: seconds for model ``i``'s sub-epoch on segment ``j``, which lets
callers express per-segment speed; a 1-D ``(M,)`` array means the same time on every segment.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ctq.scheduler import SCHEDULING_RULES, MopScheduler, bsp_order, mop_priorities


@dataclass(frozen=True)
class SimResult:
    """Outcome of one simulated schedule. Times are in the units of the durations (seconds)."""

    schedule: str  # "mop" | "bsp"
    models: int
    segments: int
    epochs: int
    makespan: float
    lower_bound: float  # max(total work / S, any model's work, any segment's work): no schedule beats it
    utilization: float  # total work / (S * makespan): the share of segment time spent training
    scheduling: str | None = None  # MOP's rule ("cost" | "random"); None for BSP


@dataclass(frozen=True)
class Comparison:
    """MOP and BSP on the same grid; with ``mop_random``, MOP under its random rule too (``mop`` is
    then the cost-aware rule)."""

    mop: SimResult
    bsp: SimResult
    mop_random: SimResult | None = None

    @property
    def speedup(self) -> float:
        """How many times faster MOP finishes than BSP."""
        return self.bsp.makespan / self.mop.makespan

    @property
    def cost_gain(self) -> float | None:
        """Random-rule MOP makespan / cost-aware MOP makespan (> 1: the cost-aware rule is faster)."""
        return None if self.mop_random is None else self.mop_random.makespan / self.mop.makespan

    def format(self, unit: str = "s") -> str:
        """A small text table for the terminal; times are in ``unit`` (the durations' unit)."""
        r = self.mop
        lines = [
            f"{r.models} models x {r.segments} segments x {r.epochs} epoch(s); times in {unit}",
            f"{'schedule':<14}{'makespan':>12}{'lower bound':>13}{'utilization':>13}",
        ]
        for res in (self.mop, self.mop_random, self.bsp):
            if res is not None:
                label = res.schedule.upper() + (f" ({res.scheduling})" if res.scheduling else "")
                lines.append(
                    f"{label:<14}{res.makespan:>12.4g}{res.lower_bound:>13.4g}{res.utilization:>13.1%}"
                )
        lines.append(f"speedup (BSP / MOP): {self.speedup:.2f}x")
        if self.mop_random is not None:
            lines.append(f"cost-aware gain (MOP random / MOP cost): {self.cost_gain:.3f}x")
        return "\n".join(lines)


def simulate(
    durations: np.ndarray,
    segments: int,
    schedule: str = "mop",
    epochs: int = 1,
    seed: int = 0,
    scheduling: str = "cost",
    warmup_estimates: bool = True,
) -> SimResult:
    """Makespan of ``schedule`` ("mop" or "bsp") for the given per-hop durations; ``scheduling``
    is MOP's rule for choosing among eligible models ("cost" or "random", see
    :class:`~ctq.scheduler.MopScheduler`). With ``warmup_estimates`` the cost-aware rule knows each
    model's mean hop duration before its first hop, as a run's warm-up timing gives it
    (:meth:`MopScheduler.expect`); without, it learns only from the hops completed so far.

    Exact, not sampled: BSP is a sum of round maxima (vectorized; 0.2 s for 10,000 models on
    1,024 segments); random-rule MOP an event simulation (8.5 s for that grid and one epoch, 10^7
    hops, on a 2-core machine, mostly in numpy; about 2 us per hop where it falls back to a Python
    loop: epoch boundaries, and grids with about as many models as segments). Cost-aware MOP drives
    the scheduler itself, feeding it each hop's duration as it completes: O(models) per hop, so
    meant for grids of up to a few hundred models (400 models x 32 segments: about 5 s).
    """
    d = _duration_matrix(durations, segments)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if scheduling not in SCHEDULING_RULES:
        raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING_RULES)}, got {scheduling!r}")
    if schedule == "mop" and scheduling == "cost":
        makespan = _cost_makespan(d, epochs, seed, warmup_estimates)
    elif schedule == "mop":
        makespan = _mop_makespan(d, epochs, seed)
    elif schedule == "bsp":
        makespan = _bsp_makespan(d, epochs, seed)
    else:
        raise ValueError(f"schedule must be 'mop' or 'bsp', got {schedule!r}")
    total = float(d.sum()) * epochs
    # Every model visits every segment each epoch, so no schedule ends before the busiest model
    # (row) or the busiest segment (column: a slow segment must still host every model) is done.
    lower = max(total / segments, float(d.sum(axis=1).max()) * epochs, float(d.sum(axis=0).max()) * epochs)
    return SimResult(
        schedule=schedule,
        models=d.shape[0],
        segments=segments,
        epochs=epochs,
        makespan=makespan,
        lower_bound=lower,
        utilization=total / (segments * makespan),
        scheduling=scheduling if schedule == "mop" else None,
    )


def compare(
    durations: np.ndarray, segments: int, epochs: int = 1, seed: int = 0, scheduling: str = "cost",
    warmup_estimates: bool = True,
) -> Comparison:
    """MOP under ``scheduling`` and BSP on the same durations; with ``scheduling="cost"``, MOP's
    random rule too (``mop_random``). ``"random"`` alone is the fast path for very large grids.
    ``warmup_estimates``: see :func:`simulate`."""
    return Comparison(
        mop=simulate(durations, segments, "mop", epochs, seed, scheduling, warmup_estimates),
        bsp=simulate(durations, segments, "bsp", epochs, seed),
        mop_random=simulate(durations, segments, "mop", epochs, seed, "random")
        if scheduling == "cost"
        else None,
    )


def heterogeneous_durations(
    models: int,
    segments: int,
    p_fast: float,
    slow_ratio: float,
    seed: int,
    segment_speed: Sequence[float] | None = None,
    fast_seconds: float = 1.0,
) -> np.ndarray:
    """The Cerebro-DS heterogeneity model: an ``(models, segments)`` duration array.

    Each model is fast (``fast_seconds`` per sub-epoch) with probability ``p_fast``, else slow
    (``slow_ratio`` times that): model size, not data, dominates a hop. ``segment_speed[j]`` is a
    relative speed: it *divides* the time, so 2.0 is a segment twice as fast (default: all 1).
    """
    if models < 1 or segments < 1:
        raise ValueError(f"models and segments must be >= 1, got {models} and {segments}")
    if not 0.0 <= p_fast <= 1.0:
        raise ValueError(f"p_fast must be a probability in [0, 1], got {p_fast}")
    if not (slow_ratio > 0 and fast_seconds > 0):
        raise ValueError(
            f"slow_ratio and fast_seconds must be > 0, got {slow_ratio} and {fast_seconds}"
        )
    speed = np.ones(segments) if segment_speed is None else np.asarray(segment_speed, float)
    if speed.shape != (segments,) or not (np.all(speed > 0) and np.all(np.isfinite(speed))):
        raise ValueError(f"segment_speed must be {segments} positive numbers")
    fast = np.random.default_rng(seed).random(models) < p_fast
    per_model = np.where(fast, fast_seconds, fast_seconds * slow_ratio)
    return per_model[:, None] / speed[None, :]


@dataclass(frozen=True)
class MeasuredRun:
    """What :func:`replay` reads of a finished run: its hops as ``(model_id, segment, seconds)``, its
    epochs, its segment count, the median gap (s) between consecutive hops on a segment (the
    coordinator's turn-around: its bookkeeping and the next statement's dispatch), and the span (s)
    of its hop schedule, first hop's start to last hop's end (the figure a replay at the run's own
    segment count should come close to)."""

    hops: tuple[tuple[int, int, float], ...]
    epochs: int
    segments: int
    gap_seconds: float = 0.0
    span_seconds: float | None = None


def replay(
    hops: Iterable[tuple[int, int, float]],
    segments_list: Sequence[int],
    epochs: int = 1,
    seed: int = 0,
    gap_seconds: float = 0.0,
    measured_segments: int | None = None,
) -> dict[int, Comparison]:
    """What-if on a finished run: MOP vs BSP at other segment counts, from measured hops.

    ``hops`` are ``(model_id, segment, seconds)`` records; ``measured_segments`` the run's segment
    count (default: the distinct segments in the records). At that count the data placement is the
    run's own, so model ``i`` takes the mean of its measured hops on segment ``j`` there (a cell
    without a hop takes the model's mean). At another count each model takes the mean of all its
    hops, scaled by ``measured / S`` (a hop trains on 1/S of the data; per-segment differences are
    averaged out, another count being another placement, and the per-hop fixed cost is scaled too).
    ``gap_seconds``, the coordinator's turn-around between a segment's hops, is added to every hop.

    Left out: the warm-up, source check and packing before the first hop; a model's hop-to-hop
    variance on one segment (means are replayed); load on the machine that changed during the run.
    """
    if not (math.isfinite(gap_seconds) and gap_seconds >= 0):
        raise ValueError(f"bad gap between hops {gap_seconds}")
    seconds: dict[int, dict[int, list[float]]] = {}
    for model_id, segment, secs in hops:
        if not (math.isfinite(secs) and secs > 0):
            raise ValueError(f"hop of model {model_id} on segment {segment}: bad duration {secs}")
        seconds.setdefault(model_id, {}).setdefault(segment, []).append(secs)
    if not seconds:
        raise ValueError("no hops to replay")
    measured = measured_segments or len({seg for per_segment in seconds.values() for seg in per_segment})
    models = sorted(seconds)
    per_model = np.array([np.mean([x for xs in seconds[m].values() for x in xs]) for m in models])
    own = np.repeat(per_model[:, None], measured, axis=1)
    for i, m in enumerate(models):
        for seg, xs in seconds[m].items():
            if 0 <= seg < measured:
                own[i, seg] = np.mean(xs)
    return {
        s: compare((own if s == measured else per_model * (measured / s)) + gap_seconds, s, epochs, seed)
        for s in segments_list
    }


def theory_speedup(p: float, L: float, workers: int) -> float:
    """Cerebro-DS closed form T_BSP / T_MOP for fast (1, prob ``p``) and slow (``L``) models.

    A BSP round is fast only if all ``workers`` models in it are: T_BSP ~ M [p^W + (1 - p^W) L].
    MOP keeps every worker busy with the mean hop: T_MOP ~ M (p + (1 - p) L). M cancels.
    """
    pw = p**workers
    return (pw + (1 - pw) * L) / (p + (1 - p) * L)


def _duration_matrix(durations: np.ndarray, segments: int) -> np.ndarray:
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    d = np.asarray(durations, dtype=np.float64)
    if d.ndim == 1:
        d = np.repeat(d[:, None], segments, axis=1)
    if d.ndim != 2 or d.shape[1] != segments or d.shape[0] < 1:
        raise ValueError(
            f"durations must be (models,) or (models, {segments}), got shape {np.shape(durations)}"
        )
    if not (np.all(np.isfinite(d)) and np.all(d > 0)):
        raise ValueError("durations must be finite and > 0")
    return d


def _bsp_makespan(d: np.ndarray, epochs: int, seed: int) -> float:
    """Sum of round maxima; vectorized over rounds, looping over segments.

    In round ``r`` segment ``j`` holds the model at position ``(j - r) mod N`` when that is < M.
    The sum is accumulated round by round, as a clock would, so it equals a driven scheduler's.
    """
    models, segments = d.shape
    slots = max(models, segments)
    order = bsp_order(seed, models)
    rounds = np.arange(slots)
    round_max = np.zeros(slots)
    for j in range(segments):
        pos = (j - rounds) % slots
        held = np.where(pos < models, d[order[np.minimum(pos, models - 1)], j], 0.0)
        np.maximum(round_max, held, out=round_max)
    return float(np.cumsum(np.tile(round_max, epochs))[-1])


def _cost_makespan(d: np.ndarray, epochs: int, seed: int, warmup_estimates: bool) -> float:
    """Cost-aware MOP on a virtual clock: at each instant every hop ending then completes (its
    duration reported to the scheduler), in segment order, and only then are new hops started."""
    models, segments = d.shape
    scheduler = MopScheduler(range(models), segments, epochs, seed, scheduling="cost")
    if warmup_estimates:
        for m, seconds in enumerate(d.mean(axis=1)):
            if seconds > 0:
                scheduler.expect(m, float(seconds))
    events: list[tuple[float, int, int]] = []  # (end, segment, model)
    t = 0.0
    hops = {}
    while True:
        for hop in scheduler.next_hops():
            hops[hop.segment] = hop
            heapq.heappush(events, (t + float(d[hop.model_id, hop.segment]), hop.segment, hop.model_id))
        if not events:
            return t
        t = events[0][0]
        while events and events[0][0] == t:
            _, seg, m = heapq.heappop(events)
            scheduler.complete(hops.pop(seg), float(d[m, seg]))


def _mop_makespan(d: np.ndarray, epochs: int, seed: int, min_batch: float = 64.0) -> float:
    """Event-driven MOP; see :class:`_MopEngine`. ``min_batch`` tunes speed, never the result."""
    engine = _MopEngine(d, epochs, seed)
    delta = float(d.min())
    # A window holds about S * delta / mean hops; numpy only pays off when that is large.
    vectorize = d.shape[1] * delta / float(d.mean()) >= min_batch
    stint = base_stint = 4 * d.shape[1]
    while not engine.finished:
        windows = 0
        while vectorize and not engine.finished and engine.vector_window(delta):
            windows += 1
        # Back off when the vectorized phase keeps declining at once (e.g. in a run's tail).
        stint = stint * 2 if windows < 16 else base_stint
        engine.run_sequentially(stint if vectorize else None)
    return float(engine.finish.max())


def _settle(
    heap: list[int],
    ok: np.ndarray,
    mods: np.ndarray,
    owner: np.ndarray,
    choice: np.ndarray,
    new: np.ndarray,
) -> bool:
    """Make a window's picks sequential: a pick whose model an earlier pick holds moves on.

    ``heap`` holds such picks (row numbers, in (time, segment) order). A row re-picks the next
    allowed entry whose model no earlier row holds, taking it from a later row if need be (that
    row then moves on in turn). Rows only ever move forward: the models held by rows before ``k``
    only accumulate. False if some row runs out of look-ahead.
    """
    n, width = ok.shape
    while heap:
        k = heapq.heappop(heap)
        if owner[new[k]] == k:
            continue  # pushed twice; already settled
        row_ok, row_m = ok[k].tolist(), mods[k].tolist()
        for c in range(int(choice[k]) + 1, width):
            m = row_m[c]
            if row_ok[c] and owner[m] > k:
                if owner[m] < n:
                    heapq.heappush(heap, int(owner[m]))
                owner[m], choice[k], new[k] = k, c, m
                break
        else:
            return False
    return True


class _MopEngine:
    """Exact replay of :class:`~ctq.scheduler.MopScheduler` for large grids.

    Segment ``s`` has a preference list (all epochs concatenated, ``pos = epoch * M + rank``) and
    takes the first entry not yet consumed whose model is idle and in that entry's epoch. Entry
    ``pos`` of ``s`` (model ``m``, epoch ``e``) is consumed once ``visited[m, s] >= e``. Two
    phases share this state and hand over to each other:

    * :meth:`vector_window` -- a hop lasts at least ``delta`` (the shortest duration), so in the
      window ``[T, T + delta)`` after the earliest completion ``T`` every segment frees at most once
      and no hop started inside the window ends inside it. All of the window's picks are computed
      at once with numpy, each from the segment's *deferred* entries (passed over while their
      model was busy) plus a short look-ahead from ``top``; :func:`_settle` then makes them
      sequential. It declines (returns False, changing nothing) when that cannot be done, e.g. a
      segment must wait for a busy model, as in the tail of a run.
    * :meth:`run_sequentially` -- an event loop, about 2 us per hop in CPython. A segment walks its
      list while many models are idle (entries of unavailable models are parked on the model
      until it frees) and scans the few idle models otherwise; a segment with nothing to do waits
      and is offered only models freed later, so fewer models than segments stays cheap too.
    """

    LOOKAHEADS = (8, 64)  # fresh entries examined per pick: cheap first, wide if need be
    DEFERRED = 32  # deferred entries a segment may hold in the vectorized phase
    SCAN = 64  # with at most this many idle models, scanning them beats walking a list

    def __init__(self, d: np.ndarray, epochs: int, seed: int):
        models, segments = d.shape
        self.models, self.segments, self.epochs = models, segments, epochs
        self.length = epochs * models
        self.prefs = np.concatenate(
            [mop_priorities(seed, e, segments, models) for e in range(epochs)], axis=1
        )
        self.prefs_flat = self.prefs.ravel()
        self.dur = np.ascontiguousarray(d.T)  # (S, M)
        self.dur_flat = self.dur.ravel()
        self.visited = np.full((models, segments), -1, dtype=np.int32)  # last epoch m ran on s
        self.direct = False  # some entry was consumed without being walked to (see _window_picks)
        self.started = np.zeros(segments, dtype=np.int64)  # hops started: == length when done
        self.top = np.zeros(segments, dtype=np.int64)  # entries from here on were never examined
        self.deferred = np.full((segments, self.DEFERRED), self.length, dtype=np.int64)  # sorted
        self.end_t = np.zeros(segments)  # every segment "frees" at 0, with no model: the start
        self.run_m = np.full(segments, -1, dtype=np.int64)
        self.finish = np.zeros(segments)
        self.busy_until = np.full(models, -np.inf)
        self.epoch = np.zeros(models, dtype=np.int64)
        self.visits = np.zeros(models, dtype=np.int64)  # segments visited in the current epoch

    @property
    def finished(self) -> bool:
        return bool(np.isinf(self.end_t).all())

    def vector_window(self, delta: float) -> bool:
        """Advance through ``[T, T + delta)``; False (and nothing changed) if it cannot."""
        M, S = self.models, self.segments
        end_t = self.end_t
        segs = np.flatnonzero(end_t < end_t.min() + delta)
        times = end_t[segs]
        order = times.argsort(kind="stable")  # segs is ascending: this is (time, segment) order
        segs, times = segs[order], times[order]
        freed = self.run_m[segs]
        fm = freed[freed >= 0]
        visits = self.visits[fm] + 1
        rolled = fm[visits == S]
        self.epoch[rolled] += 1  # early, but a model is unavailable until its busy_until anyway
        for lookahead in self.LOOKAHEADS:
            picks = self._window_picks(segs, times, lookahead)
            if picks is not None:
                break
        else:
            self.epoch[rolled] -= 1
            return False
        got, new, new_epoch, top, deferred = picks

        done = freed >= 0
        self.finish[segs[done]] = times[done]
        self.busy_until[fm] = -np.inf
        self.visits[fm] = np.where(visits == S, 0, visits)
        self.deferred[segs, : deferred.shape[1]] = deferred
        self.top[segs] = top
        ps, pm = segs[got], new[got]
        self.started[ps] += 1
        self.visited[pm, ps] = new_epoch[got]
        ends = times[got] + self.dur_flat.take(ps * M + pm)
        self.busy_until[pm] = ends
        self.run_m[segs] = new
        end_t[segs] = np.inf
        end_t[ps] = ends
        return True

    def _window_picks(
        self, segs: np.ndarray, times: np.ndarray, lookahead: int
    ) -> tuple[np.ndarray, ...] | None:
        """Picks of segments ``segs`` freeing at ``times``, in that order: (got a model, model or
        -1, its epoch, new top, new deferred rows); None if look-ahead or deferred rows are short.
        """
        M, S, n_pos = self.models, self.segments, self.length
        n = len(segs)
        idx = np.arange(n)
        top = self.top[segs]
        deferred = self.deferred[segs]
        n_def = int(np.count_nonzero(deferred.min(axis=0) < n_pos))  # rows are sorted
        fresh = top[:, None] + np.arange(lookahead)
        pos = np.concatenate([deferred[:, :n_def], fresh], axis=1)  # ascending in each row
        width = pos.shape[1]
        inside = pos < n_pos
        np.minimum(pos, n_pos - 1, out=pos)
        mods = self.prefs_flat.take(pos + (segs * n_pos)[:, None])
        ok = inside & (self.busy_until.take(mods) <= times[:, None])
        entry_epoch = pos // M if self.epochs > 1 else np.zeros_like(pos)
        if self.epochs > 1:
            ok &= entry_epoch == self.epoch.take(mods)
        live = inside
        if self.direct:  # the sequential phase consumed entries without walking to them
            live = inside & (self.visited.take(mods * S + segs[:, None]) < entry_epoch)
            ok &= live

        choice = ok.argmax(axis=1)
        at = idx * width + choice
        got = ok.ravel().take(at)
        if not (got | (self.started[segs] == n_pos)).all():
            return None
        new = np.where(got, mods.ravel().take(at), -1)
        owner = np.full(M + 1, n)  # earliest pick holding each model (slot M: rows with none)
        np.minimum.at(owner, new, idx)
        losers = np.flatnonzero(got & (owner.take(new) < idx))
        if len(losers):
            if not _settle(losers.tolist(), ok, mods, owner, choice, new):
                return None
            at = idx * width + choice

        # The new deferred rows: live entries before the pick and the old deferred ones.
        keep = live.copy()
        keep[:, n_def:] &= fresh < (top + np.maximum(choice - n_def, 0))[:, None]
        keep.ravel()[at[got]] = False
        rows = np.where(keep, pos, n_pos)
        rows.sort(axis=1)
        if width > self.DEFERRED and rows[:, self.DEFERRED].min() < n_pos:
            return None  # a segment would hold too many deferred entries
        top = np.where(got & (choice >= n_def), top + choice - n_def + 1, top)
        return got, new, entry_epoch.ravel().take(at), top, rows[:, : self.DEFERRED]

    def run_sequentially(self, budget: int | None) -> None:
        """The event loop, from the shared state, until done or (every ``budget`` hops, when the
        vectorized phase can represent the state) handing back to :meth:`vector_window`."""
        M, S, n_pos, n_epochs, scan_below = (
            self.models, self.segments, self.length, self.epochs, self.SCAN,
        )
        prefs, rows = self.prefs, [memoryview(r) for r in self.prefs]
        durs = [memoryview(r) for r in self.dur]
        visited = memoryview(self.visited.reshape(-1))  # writes land in self.visited
        epoch = self.epoch.tolist()
        visits = self.visits.tolist()
        running = self.run_m.tolist()
        started = self.started.tolist()
        ptr = self.top.tolist()
        finish = self.finish.tolist()
        skipped = [[p for p in row if p < n_pos] for row in self.deferred.tolist()]  # heaps
        events = [(t, s) for s, t in enumerate(self.end_t.tolist()) if t != math.inf]
        heapq.heapify(events)
        busy = [False] * M
        for m in running:
            if m >= 0:
                busy[m] = True
        idle_models = {m for m in range(M) if not busy[m] and epoch[m] < n_epochs}
        waiting: list[int] = []  # idle segments with entries left, ascending
        parked: dict[int, dict[int, int]] = {}  # model * epochs + epoch -> {segment: pos}
        n_parked = [0]  # entries in `parked` (a list: closures update it)
        ranks: dict[int, memoryview] = {}  # epoch * S + segment -> rank of each model
        heappop, heappush = heapq.heappop, heapq.heappush

        def rank(e: int, s: int) -> memoryview:
            r = ranks.get(e * S + s)
            if r is None:
                inv = np.empty(M, dtype=np.int32)
                inv[prefs[s, e * M : (e + 1) * M]] = np.arange(M, dtype=np.int32)
                r = ranks[e * S + s] = memoryview(inv)
            return r

        def best_of(s: int, models: Iterable[int]) -> int:
            """The idle model ``s`` prefers among ``models``, or -1: a scan, no walking."""
            best, best_pos = -1, n_pos
            for m in models:
                e = epoch[m]
                if visited[m * S + s] < e:
                    p = e * M + rank(e, s)[m]
                    if p < best_pos:
                        best, best_pos = m, p
            if best >= 0:
                self.direct = True
            return best

        def walk(s: int) -> int:
            h, row, p = skipped[s], rows[s], ptr[s]
            while True:
                if h:  # skipped entries all lie before p
                    pos = heappop(h)
                elif p < n_pos:
                    pos, p = p, p + 1
                else:
                    ptr[s] = p
                    return -1
                m = row[pos]
                e = pos // M
                if visited[m * S + s] >= e:
                    continue  # consumed by a scan
                if e == epoch[m] and not busy[m]:
                    ptr[s] = p
                    return m
                key = m * n_epochs + e
                n_parked[0] += 1
                entries = parked.get(key)
                if entries is None:
                    parked[key] = {s: pos}
                else:
                    entries[s] = pos

        def start(s: int, m: int, t: float) -> None:
            busy[m] = True
            idle_models.discard(m)
            running[s] = m
            started[s] += 1
            visited[m * S + s] = epoch[m]
            heappush(events, (t + durs[s][m], s))

        countdown = budget
        deferred: list[list[int]] = [[] for _ in range(S)]
        while events:
            t, s = heappop(events)
            batch = [s]
            while events and events[0][0] == t:
                batch.append(heappop(events)[1])
            freed = []
            for s in batch:
                finish[s] = t
                m = running[s]
                if m < 0:
                    continue
                running[s] = -1
                busy[m] = False
                v = visits[m] + 1
                if v == S:
                    v = 0
                    epoch[m] += 1
                visits[m] = v
                if epoch[m] < n_epochs:
                    idle_models.add(m)
                    freed.append(m)
                    entries = parked.pop(m * n_epochs + epoch[m], {})
                    n_parked[0] -= len(entries)
                    for w, pos in entries.items():
                        heappush(skipped[w], pos)
            if len(batch) > 1:
                batch.sort()
            if not (waiting and freed):
                for s in batch:
                    m = best_of(s, idle_models) if len(idle_models) <= scan_below else walk(s)
                    if m >= 0:
                        start(s, m, t)
                    elif started[s] < n_pos:
                        bisect.insort(waiting, s)
            else:
                # Waiting segments can use only the models just freed (nothing else was available
                # to them): merge them into the ascending pass until those models are taken.
                fresh_models, new_waiting, served = freed, [], []
                bi = wi = 0
                while bi < len(batch) or (fresh_models and wi < len(waiting)):
                    if bi < len(batch) and not (
                        fresh_models and wi < len(waiting) and waiting[wi] < batch[bi]
                    ):
                        s = batch[bi]
                        bi += 1
                        m = best_of(s, idle_models) if len(idle_models) <= scan_below else walk(s)
                        if m < 0:
                            if started[s] < n_pos:
                                new_waiting.append(s)
                            continue
                    else:
                        s = waiting[wi]
                        wi += 1
                        m = best_of(s, fresh_models)
                        if m < 0:
                            continue
                        served.append(s)
                    if m in fresh_models:
                        fresh_models.remove(m)
                    start(s, m, t)
                for w in served:
                    del waiting[bisect.bisect_left(waiting, w)]
                for w in new_waiting:
                    bisect.insort(waiting, w)
            if countdown is not None:
                countdown -= len(batch)
                if countdown <= 0 and not waiting:
                    countdown = budget = 2 * budget  # back off while handing back keeps failing
                    if n_parked[0] + sum(map(len, skipped)) > S * self.DEFERRED:
                        continue  # some segment surely holds too many deferred entries
                    deferred = [list(h) for h in skipped]
                    for entries in parked.values():
                        for w, pos in entries.items():
                            deferred[w].append(pos)
                    deferred = [
                        [p for p in entries if visited[rows[w][p] * S + w] < p // M]
                        for w, entries in enumerate(deferred)
                    ]
                    if max(map(len, deferred)) <= self.DEFERRED:
                        break
                    deferred = [[] for _ in range(S)]
        self.deferred.fill(n_pos)
        for w, entries in enumerate(deferred):
            self.deferred[w, : len(entries)] = sorted(entries)
        self.top[:] = ptr
        self.started[:] = started
        self.end_t.fill(np.inf)
        self.busy_until.fill(-np.inf)
        for t, s in events:
            self.end_t[s] = t
            self.busy_until[running[s]] = t
        self.run_m[:] = running
        self.finish[:] = finish
        self.epoch[:] = epoch
        self.visits[:] = visits

"""Makespan simulator for the MOP and BSP schedules, without a database.

Answers "how much would asynchronous hopping save on this grid?" before (``ctq simulate``) or after
(:func:`replay` on measured hop times) a run. Both schedules make exactly the decisions of
:class:`ctq.scheduler.MopScheduler` and :class:`ctq.scheduler.BspScheduler` driven by a clock at
which the coordinator completes every hop that ends at an instant before asking for new ones, so
a simulated makespan is the one those schedulers would produce with the same hop durations.

Durations are an ``(M, S)`` array: seconds for model ``i``'s sub-epoch on segment ``j``, which lets
callers express per-segment speed; a 1-D ``(M,)`` array means the same time on every segment.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ctq.scheduler import bsp_order, mop_priorities


@dataclass(frozen=True)
class SimResult:
    """Outcome of one simulated schedule. Times are in the units of the durations (seconds)."""

    schedule: str
    models: int
    segments: int
    epochs: int
    makespan: float
    lower_bound: float  # max(total work / S, the longest model's total work): no schedule beats it
    utilization: float  # total work / (S * makespan): the share of segment time spent training


@dataclass(frozen=True)
class Comparison:
    """MOP and BSP on the same grid."""

    mop: SimResult
    bsp: SimResult

    @property
    def speedup(self) -> float:
        """How many times faster MOP finishes than BSP."""
        return self.bsp.makespan / self.mop.makespan

    def format(self) -> str:
        """A small text table for the terminal."""
        r = self.mop
        lines = [
            f"{r.models} models x {r.segments} segments x {r.epochs} epoch(s)",
            f"{'schedule':<9}{'makespan':>12}{'lower bound':>13}{'utilization':>13}",
        ]
        for res in (self.mop, self.bsp):
            lines.append(
                f"{res.schedule.upper():<9}{res.makespan:>12.4g}{res.lower_bound:>13.4g}"
                f"{res.utilization:>12.1%}"
            )
        lines.append(f"speedup (BSP / MOP): {self.speedup:.2f}x")
        return "\n".join(lines)


def simulate(
    durations: np.ndarray, segments: int, schedule: str = "mop", epochs: int = 1, seed: int = 0
) -> SimResult:
    """Makespan of ``schedule`` ("mop" or "bsp") for the given per-hop durations."""
    d = _duration_matrix(durations, segments)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if schedule == "mop":
        makespan = _mop_makespan(d, epochs, seed)
    elif schedule == "bsp":
        makespan = _bsp_makespan(d, epochs, seed)
    else:
        raise ValueError(f"schedule must be 'mop' or 'bsp', got {schedule!r}")
    total = float(d.sum()) * epochs
    lower = max(total / segments, float(d.sum(axis=1).max()) * epochs)
    return SimResult(
        schedule=schedule,
        models=d.shape[0],
        segments=segments,
        epochs=epochs,
        makespan=makespan,
        lower_bound=lower,
        utilization=total / (segments * makespan),
    )


def compare(durations: np.ndarray, segments: int, epochs: int = 1, seed: int = 0) -> Comparison:
    """Both schedules on the same durations."""
    return Comparison(
        mop=simulate(durations, segments, "mop", epochs, seed),
        bsp=simulate(durations, segments, "bsp", epochs, seed),
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
    if speed.shape != (segments,) or not np.all(speed > 0):
        raise ValueError(f"segment_speed must be {segments} positive numbers")
    fast = np.random.default_rng(seed).random(models) < p_fast
    per_model = np.where(fast, fast_seconds, fast_seconds * slow_ratio)
    return per_model[:, None] / speed[None, :]


def replay(
    hops: Iterable[tuple[int, int, float]],
    segments_list: Sequence[int],
    epochs: int = 1,
    seed: int = 0,
) -> dict[int, Comparison]:
    """What-if on a finished run: MOP vs BSP at other segment counts, from measured hops.

    ``hops`` are ``(model_id, segment, seconds)`` records. Each model's hop time is estimated as the
    mean of its measured hops; per-segment differences are averaged out because another segment
    count means another data placement. A hop trains on 1/S of the data, so times are rescaled by
    ``measured S / S`` (measured S = the number of distinct segments in the records).
    """
    seconds: dict[int, list[float]] = {}
    measured_segments = set()
    for model_id, segment, secs in hops:
        if not (math.isfinite(secs) and secs > 0):
            raise ValueError(f"hop of model {model_id} on segment {segment}: bad duration {secs}")
        seconds.setdefault(model_id, []).append(secs)
        measured_segments.add(segment)
    if not seconds:
        raise ValueError("no hops to replay")
    per_model = np.array([np.mean(seconds[m]) for m in sorted(seconds)])
    return {
        s: compare(per_model * (len(measured_segments) / s), s, epochs, seed)
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
        present = pos < models
        np.maximum(round_max, np.where(present, d[order[np.minimum(pos, models - 1)], j], 0.0), out=round_max)
    return float(np.cumsum(np.tile(round_max, epochs))[-1])


def _mop_makespan(d: np.ndarray, epochs: int, seed: int, min_batch: float = 64.0) -> float:
    """Event-driven MOP; see :class:`_MopEngine`. ``min_batch`` tunes speed only, never the result."""
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
    heap: list[int], ok: np.ndarray, mods: np.ndarray, owner: np.ndarray,
    choice: np.ndarray, new: np.ndarray,
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

    Segment ``s`` walks its preference list (all epochs concatenated, ``pos = epoch * M + rank``)
    and takes the first entry it has not consumed whose model is idle and in that entry's epoch.
    Entries before ``top[s]`` that were passed over (their model was busy) are *deferred*; every
    entry from ``top[s]`` on is still unconsumed. Two phases share this state:

    * :meth:`vector_window` -- a hop lasts at least ``delta`` (the shortest duration), so in the
      window ``[T, T + delta)`` after the earliest completion ``T`` every segment frees at most once
      and no hop started inside the window ends inside it. All of the window's picks are computed
      at once with numpy, each from the segment's deferred entries plus a short look-ahead from
      ``top``, then re-picked until no pick takes a model that an earlier pick (in (time, segment)
      order) took -- a fixed point that equals the sequential answer. It declines (returns False,
      changing nothing) when a pick cannot be settled that way, e.g. a segment must wait for a busy
      model, which happens in the tail of a run.
    * :meth:`run_sequentially` -- a plain event loop (heap of segment free times, per-segment
      heap of deferred entries, entries of unavailable models parked on that model until it
      frees), about 1.7 us per hop in CPython.
    """

    LOOKAHEADS = (8, 64)  # fresh entries examined per pick: cheap first, wide if need be
    DEFERRED = 32  # deferred entries a segment may hold in the vectorized phase

    def __init__(self, d: np.ndarray, epochs: int, seed: int):
        models, segments = d.shape
        self.models, self.segments, self.epochs = models, segments, epochs
        self.length = epochs * models
        self.prefs = np.concatenate(
            [mop_priorities(seed, e, segments, models) for e in range(epochs)], axis=1
        )
        self.dur = np.ascontiguousarray(d.T)  # (S, M)
        self.dur_flat = self.dur.ravel()
        self.prefs_flat = self.prefs.ravel()
        self.top = np.zeros(segments, dtype=np.int64)
        self.deferred = np.full((segments, self.DEFERRED), self.length, dtype=np.int64)  # sorted
        self.end_t = np.zeros(segments)  # every segment "frees" at 0, with no model: the start
        self.run_m = np.full(segments, -1, dtype=np.int64)
        self.finish = np.zeros(segments)
        self.busy_until = np.full(models, -np.inf)
        self.visits = np.zeros(models, dtype=np.int64)  # segments visited in the current epoch
        self.lim = np.full(models, models, dtype=np.int64)  # entries < lim are in the model's epoch

    @property
    def finished(self) -> bool:
        return bool(np.isinf(self.end_t).all())

    def vector_window(self, delta: float) -> bool:
        """Advance through ``[T, T + delta)``; False (and nothing changed) if it cannot."""
        M, S, n_pos = self.models, self.segments, self.length
        end_t = self.end_t
        segs = np.flatnonzero(end_t < end_t.min() + delta)
        times = end_t[segs]
        order = times.argsort(kind="stable")  # segs is ascending: this is (time, segment) order
        segs, times = segs[order], times[order]
        freed = self.run_m[segs]
        fm = freed[freed >= 0]
        visits = self.visits[fm] + 1
        rolled = fm[visits == S]
        self.lim[rolled] += M  # early, but a model is unavailable until its busy_until anyway
        for lookahead in self.LOOKAHEADS:
            picks = self._window_picks(segs, times, lookahead)
            if picks is not None:
                break
        else:
            self.lim[rolled] -= M
            return False
        got, new, top, deferred = picks

        done = freed >= 0
        self.finish[segs[done]] = times[done]
        self.busy_until[fm] = -np.inf
        self.visits[fm] = np.where(visits == S, 0, visits)
        self.deferred[segs, : deferred.shape[1]] = deferred
        self.top[segs] = top
        ps, pm = segs[got], new[got]
        ends = times[got] + self.dur_flat.take(ps * M + pm)
        self.busy_until[pm] = ends
        self.run_m[segs] = new
        end_t[segs] = np.inf
        end_t[ps] = ends
        return True

    def _window_picks(
        self, segs: np.ndarray, times: np.ndarray, lookahead: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Picks of segments ``segs`` freeing at ``times``, in that order: (got a model, model or
        -1, new top, new deferred rows); None if the look-ahead or the deferred rows are too short.
        """
        M, n_pos = self.models, self.length
        n = len(segs)
        idx = np.arange(n)
        top = self.top[segs]
        deferred = self.deferred[segs]
        n_def = int(np.count_nonzero(deferred.min(axis=0) < n_pos))  # rows are sorted
        exhausted = (deferred[:, 0] >= n_pos) & (top >= n_pos)
        fresh = top[:, None] + np.arange(lookahead)
        pos = np.concatenate([deferred[:, :n_def], fresh], axis=1)  # ascending in each row
        width = pos.shape[1]
        inside = pos < n_pos
        np.minimum(pos, n_pos - 1, out=pos)
        mods = self.prefs_flat.take(pos + (segs * n_pos)[:, None])
        ok = inside & (self.busy_until.take(mods) <= times[:, None])
        if self.epochs > 1:
            ok &= pos < self.lim.take(mods)  # the entry belongs to the model's current epoch

        choice = ok.argmax(axis=1)
        got = ok.ravel().take(idx * width + choice)
        if not (got | exhausted).all():
            return None
        new = np.where(got, mods.ravel().take(idx * width + choice), -1)
        owner = np.full(M + 1, n)  # earliest pick holding each model (slot M: exhausted rows)
        np.minimum.at(owner, new, idx)
        losers = np.flatnonzero(got & (owner.take(new) < idx))
        if len(losers) and not _settle(losers.tolist(), ok, mods, owner, choice, new):
            return None

        # The new deferred rows: drop the picked entry, add the fresh entries passed over.
        rows = np.full((n, width), n_pos)
        rows[:, :n_def] = deferred[:, :n_def]
        passed = fresh < (top + np.maximum(choice - n_def, 0))[:, None]
        rows[:, n_def:width][passed] = fresh[passed]
        rows.ravel()[(idx * rows.shape[1] + choice)[got]] = n_pos
        rows.sort(axis=1)
        if rows.shape[1] > self.DEFERRED and rows[:, self.DEFERRED].min() < n_pos:
            return None  # a segment would hold too many deferred entries
        top = np.where(got & (choice >= n_def), top + choice - n_def + 1, top)
        return got, new, top, rows[:, : self.DEFERRED]  # columns past `width` stay empty

    def run_sequentially(self, budget: int | None) -> None:
        """The plain event loop, from the shared state, until done or (after ``budget`` events,
        at a moment the vectorized phase can represent) handing back to :meth:`vector_window`."""
        M, S, n_pos, n_epochs = self.models, self.segments, self.length, self.epochs
        rows = [memoryview(r) for r in self.prefs]
        durs = [memoryview(r) for r in self.dur]
        epoch = (self.lim // M - 1).tolist()
        lim = self.lim.tolist()  # entry pos is available iff pos < lim[m]; -1 while m is busy
        visits = self.visits.tolist()
        running = self.run_m.tolist()
        ptr = self.top.tolist()
        finish = self.finish.tolist()
        skipped = [[p for p in row if p < n_pos] for row in self.deferred.tolist()]  # sorted: heaps
        idle = np.isinf(self.end_t).tolist()
        events = [(t, s) for s, t in enumerate(self.end_t.tolist()) if not idle[s]]
        heapq.heapify(events)
        for m in running:
            if m >= 0:
                lim[m] = -1
        parked: dict[int, list[tuple[int, int]]] = {}  # model * epochs + epoch -> (seg, pos)
        heappop, heappush = heapq.heappop, heapq.heappush

        def pick(s: int, t: float) -> None:
            h, row, p = skipped[s], rows[s], ptr[s]
            while True:
                if h:  # skipped entries all lie before p
                    pos = heappop(h)
                elif p < n_pos:
                    pos, p = p, p + 1
                else:
                    ptr[s], idle[s], running[s] = p, True, -1
                    return
                m = row[pos]
                if pos < lim[m]:  # idle (lim = -1 while busy) and in this entry's epoch
                    ptr[s], idle[s], running[s] = p, False, m
                    lim[m] = -1
                    heappush(events, (t + durs[s][m], s))
                    return
                parked.setdefault(m * n_epochs + pos // M, []).append((s, pos))

        countdown = budget
        while events:
            t, s = heappop(events)
            batch = [s]
            while events and events[0][0] == t:
                batch.append(heappop(events)[1])
            woken = []
            for s in batch:
                finish[s] = t
                m = running[s]
                if m < 0:
                    continue
                v, e = visits[m] + 1, epoch[m]
                if v == S:
                    v, e = 0, e + 1
                    epoch[m] = e
                visits[m] = v
                lim[m] = (e + 1) * M
                for w, pos in parked.pop(m * n_epochs + e, ()):
                    heappush(skipped[w], pos)
                    if idle[w]:
                        woken.append(w)
            if woken:
                batch = sorted(set(batch).union(woken))
            elif len(batch) > 1:
                batch.sort()
            for s in batch:
                pick(s, t)
            if countdown is not None:
                countdown -= len(batch)
                if countdown <= 0:
                    countdown = budget
                    # Hand back only if no segment waits and deferred entries fit the matrix.
                    deferred = [list(h) for h in skipped]
                    for entries in parked.values():
                        for w, pos in entries:
                            deferred[w].append(pos)
                    if not any(
                        idle[w] and (ptr[w] < n_pos or deferred[w]) for w in range(S)
                    ) and max(map(len, deferred)) <= self.DEFERRED:
                        break
        else:
            deferred = [[] for _ in range(S)]
        self.deferred.fill(n_pos)
        for w, entries in enumerate(deferred):
            self.deferred[w, : len(entries)] = sorted(entries)
        self.top[:] = ptr
        self.end_t.fill(np.inf)
        self.busy_until.fill(-np.inf)
        for t, s in events:
            self.end_t[s] = t
            self.busy_until[running[s]] = t
        self.run_m[:] = running
        self.finish[:] = finish
        self.visits[:] = visits
        self.lim[:] = [(e + 1) * M for e in epoch]

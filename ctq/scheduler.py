"""Pure hop schedulers: asynchronous MOP (what ``ctq`` runs), its reproducible variant with a
seeded visiting order per model (``mop-fixed``), and BSP rotation (the baseline).

A *hop* is one model training one sub-epoch on one segment's data partition. The coordinator
(asyncio, elsewhere) owns time and I/O; these classes only decide which hop may start next, so the
same rules can be unit-tested, resumed from the database's record of finished hops, and replayed
by :mod:`ctq.simulate` without a database.

MOP has two rules for choosing among the eligible models when a segment frees up
(``scheduling``): ``cost`` (the default) starts the model with the most estimated work left, from
the hop durations observed so far and, before a model's first hop, the warm-up's timing of it (longest remaining processing time first, LRPT: the classic
rule against a tail in which one machine runs a long job while the others idle); ``random`` keeps
a seeded per-segment preference list. Both break ties by that list.

Why the preference list is seeded once rather than a fresh random draw per decision: it is Cerebro's and the original CTQ driver's rule (shuffle all (model, worker) pairs once
per epoch; an idle worker takes the first pair whose model is idle), it makes every decision a
function of the scheduler's state alone (the same completions give the same schedule, however
often the coordinator polls in between), and :mod:`ctq.simulate` can replay it exactly, fast.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np


@dataclass(frozen=True)
class Hop:
    """One sub-epoch of one model on one segment."""

    model_id: int
    epoch: int  # 0-based epoch of the model this hop belongs to
    segment: int  # 0..S-1
    last_of_epoch: bool  # completing this hop completes the model's epoch: validate then


def mop_priorities(seed: int, epoch: int, segments: int, models: int) -> np.ndarray:
    """Row ``s``: model indices (0..models-1) in the order segment ``s`` prefers them in ``epoch``.

    Independent per epoch (seeded by ``(seed, epoch)``) so that a model's luck in one epoch says
    nothing about the next. Shared with :mod:`ctq.simulate`, which must make identical choices.
    """
    base = np.tile(np.arange(models, dtype=np.int32), (segments, 1))
    return np.random.default_rng([seed, epoch]).permuted(base, axis=1)


def visiting_orders(seed: int, epoch: int, segments: int, models: int) -> np.ndarray:
    """Row ``m``: the segments model index ``m`` visits in ``epoch``, in that order (mop-fixed).

    Seeded by ``(seed, epoch)`` alone, so the sequence of segments every model trains on (and with
    it, every weight) is the same on every run, however long each hop takes. The orders are
    rotations of one shuffled tour, each model starting at a shuffled offset: at every step about
    M/S models want each segment, rather than independent draws piling onto one segment while
    another idles.
    """
    rng = np.random.default_rng([seed, epoch, 1])
    tour = rng.permutation(segments).astype(np.int32)
    start = rng.permutation(models) % segments
    return tour[(start[:, None] + np.arange(segments)[None, :]) % segments]


def bsp_order(seed: int, models: int) -> np.ndarray:
    """Model indices in rotation order: position ``i`` starts epoch rounds on segment ``i``.

    Shuffled once, like MADlib's schedule table, so that which models share a round is not an
    artefact of how the user listed them. Shared with :mod:`ctq.simulate`.
    """
    return np.random.default_rng(seed).permutation(models)


class Scheduler(abc.ABC):
    """Base class both schedules share, so the coordinator drives either the same way.

    Holds the bookkeeping (epochs, visited segments, hops in flight, failed models) and the resume
    logic; subclasses only decide which (segment, model) pairs start when asked.
    Models are indexed internally in ascending id order, so a resume that lists the ids in another
    order makes the same decisions.
    """

    def __init__(
        self,
        model_ids: Sequence[int],
        segments: int,
        epochs: int,
        seed: int,
        completed: Iterable[tuple[int, int, int]] = (),
        observed: Iterable[tuple[int, float]] = (),
    ):
        ids = list(model_ids)
        if not ids:
            raise ValueError("at least one model is required")
        if len(set(ids)) != len(ids):
            dups = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"model ids must be unique; repeated: {dups}")
        if segments < 1:
            raise ValueError(f"segments must be >= 1, got {segments}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._ids = sorted(ids)
        self._index = {mid: i for i, mid in enumerate(self._ids)}
        self._segments = segments
        self._epochs = epochs
        self._seed = seed
        self._epoch = [0] * len(ids)  # current (first unfinished) epoch per model
        self._visited: list[set[int]] = [set() for _ in ids]  # segments done in the current epoch
        self._dropped: set[int] = set()  # failed or stopped: trains no more
        self._stopped: set[int] = set()
        self._in_flight: dict[int, Hop] = {}  # segment -> hop
        self._busy: dict[int, int] = {}  # model index -> segment it is on
        self._seconds = [0.0] * len(ids)  # observed hop seconds per model (sum) ...
        self._hops_timed = [0] * len(ids)  # ... and how many hops they are over
        self._expected: dict[int, float] = {}  # model index -> estimated hop seconds before any is timed
        self._resume(completed)
        for mid, seconds in observed:
            self._observe(self._model_index(mid), seconds)

    def _observe(self, m: int, seconds: float | None) -> None:
        if seconds is None:
            return
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"hop of model {self._ids[m]}: bad duration {seconds!r}")
        self._seconds[m] += seconds
        self._hops_timed[m] += 1

    def expect(self, model_id: int, seconds: float) -> None:
        """An estimate of ``model_id``'s hop duration (seconds) before any of its hops is timed,
        e.g. from timing a training step in the warm-up; only the cost-aware MOP rule uses it.
        Raises ValueError for an unknown model or a duration that is not a positive number."""
        m = self._model_index(model_id)
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"model {model_id}: bad estimated hop duration {seconds!r}")
        self._expected[m] = float(seconds)

    def _resume(self, completed: Iterable[tuple[int, int, int]]) -> None:
        """Fast-forward past hops a previous run finished; reject sets no run could produce."""
        done: dict[int, dict[int, set[int]]] = {}
        for item in completed:
            try:
                mid, epoch, seg = item
            except (TypeError, ValueError):
                raise ValueError(
                    f"completed hop {item!r} is not a (model_id, epoch, segment) triple"
                ) from None
            if mid not in self._index:
                raise ValueError(f"completed hop {item!r}: unknown model id {mid!r}")
            if not 0 <= epoch < self._epochs:
                raise ValueError(f"completed hop {item!r}: epoch must be in 0..{self._epochs - 1}")
            if not 0 <= seg < self._segments:
                raise ValueError(
                    f"completed hop {item!r}: segment must be in 0..{self._segments - 1}"
                )
            segs = done.setdefault(self._index[mid], {}).setdefault(epoch, set())
            if seg in segs:
                raise ValueError(f"completed hop {item!r} is listed twice")
            segs.add(seg)
        for m, per_epoch in done.items():
            e = 0
            while len(per_epoch.get(e, ())) == self._segments:
                e += 1
            later = sorted(x for x in per_epoch if x > e)
            if later:
                missing = sorted(set(range(self._segments)) - per_epoch.get(e, set()))
                raise ValueError(
                    f"model {self._ids[m]}: completed hops in epoch {later[0]} but epoch {e} "
                    f"has not visited segments {missing}; epochs must finish in order"
                )
            self._epoch[m] = e
            self._visited[m] = set(per_epoch.get(e, ()))

    @abc.abstractmethod
    def _select(self) -> list[tuple[int, int]]:
        """(segment, model index) pairs to start now, on idle segments, with idle models."""

    def next_hops(self) -> list[Hop]:
        """Hops to start now on idle segments, marked in flight; [] if nothing can start now."""
        hops = []
        for seg, m in self._select():
            hop = Hop(
                model_id=self._ids[m],
                epoch=self._epoch[m],
                segment=seg,
                last_of_epoch=len(self._visited[m]) == self._segments - 1,
            )
            self._in_flight[seg] = hop
            self._busy[m] = seg
            hops.append(hop)
        return hops

    def _release(self, hop: Hop) -> int | None:
        """Take ``hop`` out of flight; None if its model was dropped meanwhile (a late report)."""
        m = self._model_index(hop.model_id)
        if m in self._dropped:
            return None
        if self._in_flight.get(hop.segment) != hop:
            raise ValueError(f"{hop} is not in flight")
        del self._in_flight[hop.segment]
        del self._busy[m]
        return m

    def complete(self, hop: Hop, seconds: float | None = None) -> None:
        """``hop`` finished OK: the model has visited the segment; both are free again.
        ``seconds``: how long the hop took, if known (the cost-aware MOP rule learns from it)."""
        m = self._release(hop)
        if m is None:
            return
        self._observe(m, seconds)
        visited = self._visited[m]
        visited.add(hop.segment)
        if len(visited) == self._segments:
            self._epoch[m] += 1
            visited.clear()

    def fail_model(self, model_id: int) -> None:
        """Deterministic failure: drop the model. Its in-flight hop, if any, is forgotten."""
        m = self._model_index(model_id)
        self._dropped.add(m)
        seg = self._busy.pop(m, None)
        if seg is not None:
            del self._in_flight[seg]

    def stop_model(self, model_id: int) -> None:
        """Early stopping (a search's decision, e.g. ASHA's at a rung): the model trains no more.
        Unlike :meth:`fail_model` it must be idle (decisions come between hops); raises ValueError
        if a hop of it is in flight."""
        m = self._model_index(model_id)
        if m in self._busy:
            raise ValueError(f"model {model_id} has a hop in flight; stop it between hops")
        self._dropped.add(m)
        self._stopped.add(m)

    def _model_index(self, model_id: int) -> int:
        try:
            return self._index[model_id]
        except KeyError:
            raise ValueError(f"unknown model id {model_id!r}") from None

    @property
    def done(self) -> bool:
        """Nothing pending and nothing in flight (failed and stopped models count as finished)."""
        return not self._in_flight and all(
            e == self._epochs for m, e in enumerate(self._epoch) if m not in self._dropped
        )

    @property
    def live(self) -> int:
        """Models with training left (not failed, not stopped), in flight or not."""
        return sum(e < self._epochs and m not in self._dropped for m, e in enumerate(self._epoch))

    @property
    def in_flight(self) -> Mapping[int, Hop]:
        """Read-only live view: segment -> hop running there."""
        return MappingProxyType(self._in_flight)

    @property
    def failed(self) -> frozenset[int]:
        """Ids of the models dropped by :meth:`fail_model`."""
        return frozenset(self._ids[m] for m in self._dropped - self._stopped)

    @property
    def stopped(self) -> frozenset[int]:
        """Ids of the models stopped by :meth:`stop_model`."""
        return frozenset(self._ids[m] for m in self._stopped)

    def hop_left_on(self, model_id: int, segment: int) -> bool:
        """Whether the model has a hop left on ``segment`` (in flight or to come): it trains on (not
        failed, not stopped, epochs left) and either has an epoch after its current one or has not
        yet visited ``segment`` in it. Why: a segment's new backend (a reconnect, a resume) builds
        only these models, not every model of the run."""
        m = self._model_index(model_id)
        if m in self._dropped or self._epoch[m] >= self._epochs:
            return False
        return self._epoch[m] < self._epochs - 1 or segment not in self._visited[m]

    def progress(self, model_id: int) -> tuple[int, int]:
        """(epochs completed, hops completed in the current epoch)."""
        m = self._model_index(model_id)
        return self._epoch[m], len(self._visited[m])


SCHEDULING_RULES = ("cost", "random")


class MopScheduler(Scheduler):
    """Asynchronous Model Hopper Parallelism with no global epoch barrier.

    A model starts its next epoch as soon as it has visited every segment. Each idle segment takes
    one of its *eligible* models (not failed, not in flight, epochs left, segment not yet visited in
    the model's current epoch), by ``scheduling``:

    * ``"cost"`` (default): the model with the most estimated work left first, its hops left times
      its estimated hop (longest remaining processing time first, LRPT), then the earlier epoch. A model's hop is estimated by its mean observed hop duration; before its first hop,
      by :meth:`expect`'s estimate (the warm-up times one training step of every model), scaled
      by how the timed models' observed hops compare with their own estimates; with neither, at
      the mean of the timed models, or all alike before any hop is timed. Models are served in
      that order, each on the idle segment with the most estimated work left to host (the live
      models that have yet to visit it): slow models start early, a segment every slow model
      still needs is not given to a fast one, and the run does not end with one segment training
      a slow model while the others idle. Ties go to the segment's seeded preference.
    * ``"random"``: models in an earlier epoch first (a lagging model has the most work left), then
      the first in the segment's seeded preference list (Cerebro's rule).

    Durations come from :meth:`complete` (``seconds``) and, on a resume, ``observed``:
    ``(model_id, seconds)`` of hops already done. Idle segments are served in ascending order,
    greedily. That leaves no idle segment with an eligible model (a greedy matching is maximal),
    which is what keeps every worker busy; a maximum matching could occasionally start one more hop
    in the same instant, but would break the exact replay in :mod:`ctq.simulate`.
    """

    def __init__(self, *args, scheduling: str = "cost", **kwargs):
        """:class:`Scheduler`'s arguments, and ``scheduling``: the rule that picks among the models
        a free segment may take (SCHEDULING_RULES)."""
        if scheduling not in SCHEDULING_RULES:
            raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING_RULES)}, got {scheduling!r}")
        self._scheduling = scheduling
        super().__init__(*args, **kwargs)
        self._ranks: dict[int, list[list[int]]] = {}  # epoch -> [segment][model] -> preference

    def add_model(self, model_id: int) -> None:
        """A model joins the run (a search asked for it), idle and at its first epoch. Its id must
        be larger than every id so far, so that models stay indexed in ascending id order as a
        resume indexes them; the segments' preference lists are redrawn for the new model count.
        Raises ValueError otherwise."""
        if model_id in self._index or model_id < self._ids[-1]:
            raise ValueError(f"model {model_id}: a new model's id must be larger than every id so far "
                             f"(largest: {self._ids[-1]})")
        self._index[model_id] = len(self._ids)
        self._ids.append(model_id)
        self._epoch.append(0)
        self._visited.append(set())
        self._seconds.append(0.0)
        self._hops_timed.append(0)
        self._ranks.clear()

    def _rank(self, epoch: int) -> list[list[int]]:
        ranks = self._ranks.get(epoch)
        if ranks is None:
            order = mop_priorities(self._seed, epoch, self._segments, len(self._ids))
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(len(self._ids), dtype=order.dtype), axis=1)
            ranks = self._ranks[epoch] = rank.tolist()
        return ranks

    def _estimates(self) -> list[float]:
        """Estimated seconds of one hop per model index (see the class docstring for the order
        of sources). Estimates from :meth:`expect` are scaled by the mean ratio observed/expected
        over the models that have both, so that a warm-up step's timing and a hop's are in the
        same units as soon as one model has been timed."""
        timed = {m: self._seconds[m] / n for m, n in enumerate(self._hops_timed) if n}
        ratios = [timed[m] / e for m, e in self._expected.items() if m in timed]
        scale = sum(ratios) / len(ratios) if ratios else 1.0
        if timed:
            fallback = sum(timed.values()) / len(timed)
        elif self._expected:
            fallback = sum(self._expected.values()) / len(self._expected)
        else:
            fallback = 1.0
        return [timed[m] if m in timed else self._expected[m] * scale if m in self._expected else fallback
                for m in range(len(self._ids))]

    def _hops_left(self, m: int) -> int:
        return (self._epochs - self._epoch[m]) * self._segments - len(self._visited[m])

    def _select(self) -> list[tuple[int, int]]:
        idle = [s for s in range(self._segments) if s not in self._in_flight]
        free = [
            m
            for m, e in enumerate(self._epoch)
            if e < self._epochs and m not in self._busy and m not in self._dropped
        ]
        if not (idle and free):
            return []
        if self._scheduling == "cost":
            return self._select_by_cost(idle, free)
        picks = []
        for seg in idle:
            eligible = [m for m in free if seg not in self._visited[m]]
            if eligible:
                best = min(eligible, key=lambda m: (self._epoch[m], self._rank(self._epoch[m])[seg][m]))
                free.remove(best)
                picks.append((seg, best))
        return picks

    def _select_by_cost(self, idle: list[int], free: list[int]) -> list[tuple[int, int]]:
        """The cost-aware rule (class docstring): models in (most work left, epoch) order, each on
        the idle segment it has not visited that has the most work left to host."""
        est = self._estimates()
        live = [m for m, e in enumerate(self._epoch) if e < self._epochs and m not in self._dropped]
        seg_work = {s: sum(est[m] * (self._epochs - self._epoch[m] - (s in self._visited[m])) for m in live)
                    for s in idle}
        picks = []
        first = idle[0]  # equal work (nothing timed or estimated yet): its seeded preference decides
        for m in sorted(free, key=lambda m: (-est[m] * self._hops_left(m), self._epoch[m],
                                             self._rank(self._epoch[m])[first][m])):
            segments = [s for s in idle if s not in self._visited[m]]
            if segments:
                seg = max(segments, key=lambda s: (seg_work[s], -s))
                idle.remove(seg)
                picks.append((seg, m))
                if not idle:
                    break
        return picks


class MopFixedScheduler(MopScheduler):
    """MOP where each model's segment order per epoch is fixed by the seed: reproducible training.

    Under plain MOP, which segment a model visits next depends on which segment frees up first,
    i.e. on timing, so the same grid and seed give different weights run to run. Here a segment
    only takes a model whose *next* segment (in :func:`visiting_orders`) it is; among those, the
    same rule as MOP (earlier epoch, then the segment's preference). The visiting order, and so
    every model's weights, no longer depends on timing; the price is that a free segment can idle
    while models wait for other segments (measured by ``make bench``). A free model's next segment
    is always one it waits for, so with nothing in flight some hop can always start: no deadlock.
    """

    def __init__(self, *args, **kwargs):
        """:class:`Scheduler`'s arguments."""
        self._orders: dict[int, list[list[int]]] = {}  # epoch -> [model][k] -> k-th segment
        super().__init__(*args, scheduling="random", **kwargs)
        for m, visited in enumerate(self._visited):
            order = self._order(self._epoch[m])[m] if self._epoch[m] < self._epochs else []
            if visited != set(order[: len(visited)]):
                raise ValueError(
                    f"model {self._ids[m]}: completed segments {sorted(visited)} of epoch "
                    f"{self._epoch[m]} are not the start of its fixed order {order}; "
                    "was the run started with another schedule?"
                )

    def add_model(self, model_id: int) -> None:
        """Not here: every model's visiting order is drawn for the run's model count up front."""
        raise ValueError("mop-fixed cannot take models during a run (its visiting orders are fixed)")

    def _order(self, epoch: int) -> list[list[int]]:
        orders = self._orders.get(epoch)
        if orders is None:
            orders = self._orders[epoch] = visiting_orders(
                self._seed, epoch, self._segments, len(self._ids)
            ).tolist()
        return orders

    def _select(self) -> list[tuple[int, int]]:
        idle = {s for s in range(self._segments) if s not in self._in_flight}
        waiting: dict[int, list[int]] = {}  # idle segment -> free models whose next segment it is
        for m, e in enumerate(self._epoch):
            if e < self._epochs and m not in self._busy and m not in self._dropped:
                seg = self._order(e)[m][len(self._visited[m])]
                if seg in idle:
                    waiting.setdefault(seg, []).append(m)
        return [
            (seg, min(ms, key=lambda m: (self._epoch[m], self._rank(self._epoch[m])[seg][m])))
            for seg, ms in sorted(waiting.items())
        ]


class BspScheduler(Scheduler):
    """MADlib-style rotation with a barrier after every round, for comparison benchmarks.

    With ``N = max(M, S)`` slots, in round ``r`` of an epoch the model at position ``i`` of a once-
    shuffled order trains on segment ``(i + r) mod N`` if that is a real segment, else it is parked.
    ``N`` rounds make an epoch, so every model visits every segment once per epoch. A round starts
    only when the previous one has fully finished; failed models leave holes; hops already done (a
    resume, or a retried round) are skipped, and a round with nothing left to do is skipped whole.
    """

    def __init__(self, *args, **kwargs):
        """:class:`Scheduler`'s arguments."""
        super().__init__(*args, **kwargs)
        self._order = bsp_order(self._seed, len(self._ids)).tolist()
        self._slots = max(len(self._ids), self._segments)
        self._round = 0  # global round (epoch * slots + r): the earliest that may have work left

    def _select(self) -> list[tuple[int, int]]:
        if self._in_flight:
            return []  # the barrier
        while self._round < self._epochs * self._slots:
            epoch, r = divmod(self._round, self._slots)
            picks = []
            for i, m in enumerate(self._order):
                seg = (i + r) % self._slots
                # Every earlier round is finished, so a live model is in `epoch` or past it.
                if (
                    seg < self._segments
                    and m not in self._dropped
                    and self._epoch[m] == epoch
                    and seg not in self._visited[m]
                ):
                    picks.append((seg, m))
            if picks:
                return sorted(picks)
            self._round += 1
        return []

"""Property tests of the MOP, mop-fixed and BSP schedulers, driven by a virtual clock like the coordinator."""

from __future__ import annotations

import functools
import heapq
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctq.scheduler import BspScheduler, Hop, MopFixedScheduler, MopScheduler, Scheduler, visiting_orders

SCHEDULERS = {
    "mop": MopScheduler,  # cost-aware (the default rule)
    "mop-random": functools.partial(MopScheduler, scheduling="random"),
    "mop-fixed": MopFixedScheduler,
    "bsp": BspScheduler,
}
ALL = list(SCHEDULERS)


@dataclass
class Trace:
    """What happened in one driven run."""

    done: list[tuple[float, float, Hop]] = field(default_factory=list)  # (start, end, hop)
    batches: list[tuple[float, list[Hop]]] = field(default_factory=list)  # non-empty next_hops
    started_after_fail: list[Hop] = field(default_factory=list)
    failed_attempts: list[tuple[float, float, Hop]] = field(default_factory=list)  # (start, end, hop) retried


class Driver:
    """Runs a scheduler to the end on a virtual clock, checking the MOP invariant as it goes.

    At each instant it completes (or retries, or fails) every hop ending then, in segment order,
    and only then asks for new hops -- what the coordinator does. A retried hop is what the
    coordinator makes of a transient failure: it stays in flight, the scheduler is not told, and
    it runs again on its segment. It keeps its own record of
    each model's epoch and visited segments, so the checks do not trust the scheduler's.
    """

    def __init__(self, sched: Scheduler, ids, segments, epochs, durations, completed=()):
        self.sched, self.ids, self.S, self.E = sched, list(ids), segments, epochs
        self.durations = durations  # (model_id, segment) -> seconds
        self.visited = {m: {} for m in self.ids}  # model -> {epoch: set of segments}
        self.failed: set[int] = set()
        self.timed: dict[int, list[float]] = {m: [] for m in self.ids}  # durations fed back
        for m, e, s in completed:
            self.visited[m].setdefault(e, set()).add(s)
            self.timed[m].append(durations[m, s])  # what a resume reads back from the catalog

    def epoch_of(self, m: int) -> int:
        e = 0
        while len(self.visited[m].get(e, ())) == self.S:
            e += 1
        return e

    def eligible(self, m: int, seg: int) -> bool:
        busy = {h.model_id for h in self.sched.in_flight.values()}
        e = self.epoch_of(m)
        return (
            m not in self.failed
            and m not in busy
            and e < self.E
            and seg not in self.visited[m].get(e, set())
        )

    def ask(self, t: float, trace: Trace) -> list[Hop]:
        hops = self.sched.next_hops()
        for h in hops:
            assert h.model_id not in self.failed
            assert h.epoch == self.epoch_of(h.model_id)
            assert h.segment not in self.visited[h.model_id].get(h.epoch, set())
        if hops:
            trace.batches.append((t, hops))
        if type(self.sched) is MopScheduler and self.sched._scheduling == "cost":
            self.check_longest_remaining_first(hops)
        if type(self.sched) is MopScheduler:
            for seg in range(self.S):
                if seg not in self.sched.in_flight:
                    assert not any(self.eligible(m, seg) for m in self.ids), (t, seg)
        if isinstance(self.sched, MopFixedScheduler):  # idle only while nobody waits for it
            for seg in range(self.S):
                if seg not in self.sched.in_flight:
                    assert not any(
                        self.eligible(m, seg) and self.next_segment(m) == seg for m in self.ids
                    ), (t, seg)
        return hops

    def next_segment(self, m: int) -> int:
        """mop-fixed: the segment model ``m`` visits next in its seeded order (visiting_orders)."""
        e = self.epoch_of(m)
        orders = visiting_orders(self.sched._seed, e, self.S, len(self.ids))
        return int(orders[sorted(self.ids).index(m)][len(self.visited[m].get(e, ()))])  # models by id

    def remaining(self) -> dict[int, float]:
        """Each live model's hops left x its mean fed-back duration (prior: the mean of the timed
        models' means, or 1), computed from the driver's own records."""
        means = {m: sum(ts) / len(ts) for m, ts in self.timed.items() if ts}
        prior = sum(means.values()) / len(means) if means else 1.0
        left = {}
        for m in self.ids:
            e = self.epoch_of(m)
            if m not in self.failed and e < self.E:
                hops = (self.E - e) * self.S - len(self.visited[m].get(e, ()))
                left[m] = hops * means.get(m, prior)
        return left

    def check_longest_remaining_first(self, hops: list[Hop]) -> None:
        """No model left waiting (eligible on a segment that just got a model) has more estimated
        work left than the model that segment got."""
        left = self.remaining()
        for h in hops:
            waiting = [left[m] for m in self.ids if self.eligible(m, h.segment)]
            assert left[h.model_id] >= max(waiting, default=0.0) - 1e-9, (h, left)

    def run(self, retry_once=frozenset(), fail_at: int | None = None, fail_idle=None, stop_after=frozenset(),
            add_at=None) -> Trace:
        """``retry_once``: (model, epoch, segment) hops whose first attempt fails transiently (run
        again at once, in flight all along, as the coordinator does).
        ``fail_at``: the completion event (0-based) that is instead a deterministic failure.
        ``fail_idle``: (instant number, model) to fail between instants, whatever it is doing.
        ``stop_after``: (model, epochs done) at which a search stops the model (ASHA at a rung).
        ``add_at``: (instant number, model id, its durations per segment): a model joins (TPE)."""
        trace, retried, events, seq, t, n_events, instant = Trace(), set(), [], 0, 0.0, 0, 0
        starts: dict[Hop, float] = {}

        def launch(hops):
            nonlocal seq
            for h in hops:
                starts[h] = t
                end = t + self.durations[h.model_id, h.segment]
                heapq.heappush(events, (end, h.segment, seq, h))
                seq += 1

        launch(self.ask(t, trace))
        while events:
            t = events[0][0]
            while events and events[0][0] == t:
                _, _, _, hop = heapq.heappop(events)
                key = (hop.model_id, hop.epoch, hop.segment)
                if hop.model_id in self.failed:
                    self.sched.complete(hop)  # a late report of a dropped model: ignored
                elif n_events == fail_at:
                    self.failed.add(hop.model_id)
                    self.sched.fail_model(hop.model_id)
                elif key in retry_once and key not in retried:
                    retried.add(key)
                    trace.failed_attempts.append((starts[hop], t, hop))
                    launch([hop])  # the scheduler still has it in flight
                else:
                    seconds = self.durations[hop.model_id, hop.segment]
                    self.sched.complete(hop, seconds)
                    self.timed[hop.model_id].append(seconds)
                    trace.done.append((starts[hop], t, hop))
                    self.visited[hop.model_id].setdefault(hop.epoch, set()).add(hop.segment)
                    if hop.last_of_epoch and (hop.model_id, hop.epoch + 1) in stop_after:
                        self.sched.stop_model(hop.model_id)
                        self.failed.add(hop.model_id)  # for the checks: it may train no more
                n_events += 1
            instant += 1
            if add_at is not None and instant == add_at[0]:
                _, new_id, per_segment = add_at
                self.sched.add_model(new_id)
                self.ids.append(new_id)
                self.visited[new_id], self.timed[new_id] = {}, []
                self.durations.update({(new_id, seg): d for seg, d in enumerate(per_segment)})
            if fail_idle is not None and instant == fail_idle[0]:
                self.failed.add(fail_idle[1])
                self.sched.fail_model(fail_idle[1])
            hops = self.ask(t, trace)
            trace.started_after_fail += [h for h in hops if h.model_id in self.failed]
            launch(hops)
        assert self.sched.done
        assert not self.sched.in_flight
        return trace


def durations_for(ids, segments, values):
    return {
        (m, s): values[(i * segments + s) % len(values)]
        for i, m in enumerate(ids)
        for s in range(segments)
    }


@st.composite
def grids(draw, max_models=12, max_segments=6, max_epochs=3):
    models = draw(st.integers(1, max_models))
    segments = draw(st.integers(1, max_segments))
    epochs = draw(st.integers(1, max_epochs))
    seed = draw(st.integers(0, 2**16))
    # Small integers make many hops end at the same instant; floats make every instant distinct.
    values = draw(
        st.one_of(
            st.lists(st.integers(1, 4).map(float), min_size=1, max_size=models * segments),
            st.lists(st.floats(0.1, 5.0), min_size=1, max_size=models * segments),
        )
    )
    ids = draw(st.permutations(range(0, 3 * models, 3)))  # ids need not be 0..M-1 nor sorted
    return ids, segments, epochs, seed, durations_for(ids, segments, values)


def check_schedule(trace: Trace, ids, segments, epochs, skip=frozenset()):
    """Every hop once; no overlaps per model or segment; epochs in order; last_of_epoch exact."""
    keys = [(h.model_id, h.epoch, h.segment) for _, _, h in trace.done]
    every = [(m, e, s) for m in ids for e in range(epochs) for s in range(segments)]
    assert Counter(keys) == Counter(k for k in every if k not in skip)
    for attr in ("model_id", "segment"):
        by: dict[int, list] = {}
        for start, end, h in trace.done:
            by.setdefault(getattr(h, attr), []).append((start, end))
        for spans in by.values():
            spans.sort()
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    for m in ids:
        hops = sorted((start, end, h) for start, end, h in trace.done if h.model_id == m)
        for e in range(epochs - 1):
            ends = [end for _, end, h in hops if h.epoch == e]
            starts = [start for start, _, h in hops if h.epoch == e + 1]
            if ends and starts:
                assert max(ends) <= min(starts)
        for e in range(epochs):
            of_epoch = [h for _, _, h in hops if h.epoch == e]
            skipped = sum((m, e, s) in skip for s in range(segments))
            if of_epoch and len(of_epoch) + skipped == segments:
                assert [h.last_of_epoch for h in of_epoch] == [False] * (len(of_epoch) - 1) + [True]


@pytest.mark.parametrize("kind", ALL)
@settings(max_examples=100, deadline=None)
@given(grid=grids())
def test_every_hop_once_without_overlaps(kind, grid):
    ids, segments, epochs, seed, durations = grid
    sched = SCHEDULERS[kind](ids, segments, epochs, seed)
    trace = Driver(sched, ids, segments, epochs, durations).run()
    check_schedule(trace, ids, segments, epochs)
    for m in ids:
        assert sched.progress(m) == (epochs, 0)


@settings(max_examples=80, deadline=None)
@given(grid=grids())
def test_bsp_rounds_rotate_behind_a_barrier(grid):
    ids, segments, epochs, seed, durations = grid
    sched = BspScheduler(ids, segments, epochs, seed)
    trace = Driver(sched, ids, segments, epochs, durations).run()
    slots = max(len(ids), segments)
    assert len(trace.batches) == epochs * slots
    ends = {(h.model_id, h.epoch, h.segment): end for _, end, h in trace.done}
    previous_end = 0.0
    for t, hops in trace.batches:
        assert t >= previous_end  # nothing of this round starts before the last round ended
        assert len(hops) == min(len(ids), segments)
        assert len({h.segment for h in hops}) == len({h.model_id for h in hops}) == len(hops)
        previous_end = max(ends[(h.model_id, h.epoch, h.segment)] for h in hops)


@pytest.mark.parametrize("kind", ALL)
@settings(max_examples=25, deadline=None)
@given(grid=grids())
def test_same_seed_same_schedule(kind, grid):
    ids, segments, epochs, seed, durations = grid
    make = SCHEDULERS[kind]
    runs = [
        Driver(make(ids, segments, epochs, seed), ids, segments, epochs, durations).run()
        for _ in range(2)
    ]
    assert runs[0].done == runs[1].done


@pytest.mark.parametrize("kind", ["mop", "mop-random", "bsp"])  # mop-fixed: see below
@settings(max_examples=40, deadline=None)
@given(grid=grids(), cut=st.floats(0, 1), first=st.sampled_from(["mop", "mop-random", "bsp"]))
def test_resume_finishes_the_rest_without_repeats(kind, grid, cut, first):
    ids, segments, epochs, seed, durations = grid
    sched = SCHEDULERS[first](ids, segments, epochs, seed)
    full = Driver(sched, ids, segments, epochs, durations).run()
    by_end = sorted(full.done, key=lambda r: r[1])
    in_order = [(h.model_id, h.epoch, h.segment) for _, _, h in by_end]
    prefix = in_order[: int(cut * len(in_order))]
    observed = [(m, durations[m, s]) for m, _, s in prefix]  # the cost-aware rule's memory
    sched = SCHEDULERS[kind](ids, segments, epochs, seed + 1, completed=prefix, observed=observed)
    rest = Driver(sched, ids, segments, epochs, durations, completed=prefix).run()
    check_schedule(rest, ids, segments, epochs, skip=frozenset(prefix))


@pytest.mark.parametrize("kind", ALL)
@settings(max_examples=40, deadline=None)
@given(grid=grids(), data=st.data())
def test_retried_hops_run_again_once(kind, grid, data):
    ids, segments, epochs, seed, durations = grid
    every = [(m, e, s) for m in ids for e in range(epochs) for s in range(segments)]
    flaky = frozenset(data.draw(st.lists(st.sampled_from(every), max_size=8)))
    sched = SCHEDULERS[kind](ids, segments, epochs, seed)
    trace = Driver(sched, ids, segments, epochs, durations).run(retry_once=flaky)
    check_schedule(trace, ids, segments, epochs)
    done = {(h.model_id, h.epoch, h.segment): (start, end) for start, end, h in trace.done}
    assert sorted((h.model_id, h.epoch, h.segment) for _, _, h in trace.failed_attempts) == sorted(flaky)
    for start, end, hop in trace.failed_attempts:
        assert done[hop.model_id, hop.epoch, hop.segment][0] == end  # run again right after, and once
        for other_start, other_end, other in trace.done:  # nothing else on its segment or of its model meanwhile
            if (other.segment == hop.segment or other.model_id == hop.model_id) and other != hop:
                assert other_end <= start or other_start >= end, (hop, other)


@pytest.mark.parametrize("kind", ALL)
@settings(max_examples=40, deadline=None)
@given(grid=grids(), data=st.data())
def test_failed_model_stops_and_the_rest_finish(kind, grid, data):
    ids, segments, epochs, seed, durations = grid
    total = len(ids) * segments * epochs
    sched = SCHEDULERS[kind](ids, segments, epochs, seed)
    driver = Driver(sched, ids, segments, epochs, durations)
    if data.draw(st.booleans()):  # fails while training a hop
        trace = driver.run(fail_at=data.draw(st.integers(0, total - 1)))
    else:  # fails between hops (e.g. its validation crashed)
        when, model = data.draw(st.integers(1, total)), data.draw(st.sampled_from(ids))
        trace = driver.run(fail_idle=(when, model))
    assert not trace.started_after_fail
    assert sched.failed == frozenset(driver.failed)
    (dead,) = driver.failed or {None}
    survivors = [m for m in ids if m != dead]
    kept = [r for r in trace.done if r[2].model_id != dead]
    check_schedule(Trace(done=kept), survivors, segments, epochs)


def visiting_sequences(trace: Trace) -> dict[int, list[tuple[int, int]]]:
    """Per model, the (epoch, segment) of its hops in the order it trained them."""
    seqs: dict[int, list[tuple[int, int]]] = {}
    for _, _, h in sorted(trace.done, key=lambda r: r[0]):
        seqs.setdefault(h.model_id, []).append((h.epoch, h.segment))
    return seqs


@settings(max_examples=60, deadline=None)
@given(grid=grids(), other=st.lists(st.floats(0.1, 5.0), min_size=1, max_size=20), data=st.data())
def test_mop_fixed_visiting_order_does_not_depend_on_timing(grid, other, data):
    """What makes a rerun bit-for-bit: each model meets the segments in the same order whatever
    the hop times, the retries or a resume; and that order is the seeded one."""
    ids, segments, epochs, seed, durations = grid
    first = Driver(MopFixedScheduler(ids, segments, epochs, seed), ids, segments, epochs, durations).run()
    every = [(m, e, s) for m in ids for e in range(epochs) for s in range(segments)]
    flaky = frozenset(data.draw(st.lists(st.sampled_from(every), max_size=4)))
    slow = durations_for(ids, segments, other)
    second = Driver(MopFixedScheduler(ids, segments, epochs, seed), ids, segments, epochs, slow).run(
        retry_once=flaky
    )
    assert visiting_sequences(first) == visiting_sequences(second)
    in_order = [(h.model_id, h.epoch, h.segment) for _, _, h in sorted(first.done, key=lambda r: r[1])]
    prefix = in_order[: data.draw(st.integers(0, len(in_order)))]
    resumed = MopFixedScheduler(ids, segments, epochs, seed, completed=prefix)
    rest = Driver(resumed, ids, segments, epochs, slow, completed=prefix).run()
    check_schedule(rest, ids, segments, epochs, skip=frozenset(prefix))
    done = Trace(done=[(-1.0, -1.0, Hop(m, e, s, False)) for m, e, s in prefix] + rest.done)
    assert visiting_sequences(done) == visiting_sequences(first)


def test_mop_fixed_refuses_to_resume_hops_of_another_order():
    wrong = [s for s in range(3) if s != visiting_orders(0, 0, 3, 1)[0][0]][0]
    with pytest.raises(ValueError, match="not the start of its fixed order"):
        MopFixedScheduler([1], 3, 1, 0, completed=[(1, 0, wrong)])


def test_progress_counts_epochs_and_hops():
    done = [(5, 0, 0), (5, 0, 2), (5, 0, 1), (5, 1, 2)]
    sched = MopScheduler([5], segments=3, epochs=2, seed=0, completed=done)
    assert sched.progress(5) == (1, 1)
    (hop,) = sched.next_hops()
    assert (hop.epoch, hop.last_of_epoch) == (1, False)
    sched.complete(hop)
    (hop,) = sched.next_hops()
    assert (hop.epoch, hop.last_of_epoch) == (1, True)
    sched.complete(hop)
    assert sched.progress(5) == (2, 0) and sched.done and sched.next_hops() == []


def test_mop_keeps_every_segment_busy_when_it_can():
    sched = MopScheduler(range(4), segments=3, epochs=1, seed=7)
    first = sched.next_hops()
    assert sorted(h.segment for h in first) == [0, 1, 2]
    assert sched.next_hops() == []  # all segments busy
    sched.complete(first[0])
    (again,) = sched.next_hops()
    assert again.segment == first[0].segment and again.model_id != first[0].model_id


def test_bsp_waits_for_the_whole_round():
    sched = BspScheduler(range(2), segments=2, epochs=1, seed=0)
    round0 = sched.next_hops()
    assert len(round0) == 2
    sched.complete(round0[0])
    assert sched.next_hops() == []
    sched.complete(round0[1])
    round1 = sched.next_hops()
    assert {(h.model_id, h.segment) for h in round1} == {
        (h.model_id, 1 - h.segment) for h in round0
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (([], 2, 1, 0), "at least one model"),
        (([1, 2, 1], 2, 1, 0), "unique; repeated: [1]"),
        (([1], 0, 1, 0), "segments must be >= 1, got 0"),
        (([1], 2, 0, 0), "epochs must be >= 1, got 0"),
        (([1], 2, 1, -1), "seed must be >= 0, got -1"),
    ],
)
@pytest.mark.parametrize("kind", ALL)
def test_bad_arguments_are_named(kind, args, message):
    with pytest.raises(ValueError) as err:
        SCHEDULERS[kind](*args)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "completed, message",
    [
        ([(9, 0, 0)], "unknown model id 9"),
        ([(1, 2, 0)], "epoch must be in 0..1"),
        ([(1, 0, 3)], "segment must be in 0..2"),
        ([(1, 0, 0), (1, 0, 0)], "listed twice"),
        ([(1, 0)], "is not a (model_id, epoch, segment) triple"),
        (
            [(1, 0, 0), (1, 1, 2)],
            "model 1: completed hops in epoch 1 but epoch 0 has not visited segments [1, 2]",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["mop", "mop-random", "bsp"])
def test_inconsistent_resume_is_rejected(kind, completed, message):
    with pytest.raises(ValueError) as err:
        SCHEDULERS[kind]([1, 2], 3, 2, 0, completed=completed)
    assert message in str(err.value)


@pytest.mark.parametrize("kind", ALL)
def test_reports_of_unknown_hops_are_rejected(kind):
    sched = SCHEDULERS[kind]([1, 2], 2, 1, 0)
    (hop, *_) = sched.next_hops()
    with pytest.raises(ValueError, match="is not in flight"):
        sched.complete(Hop(hop.model_id, hop.epoch, 1 - hop.segment, hop.last_of_epoch))
    sched.complete(hop)
    with pytest.raises(ValueError, match="is not in flight"):
        sched.complete(hop)
    with pytest.raises(ValueError, match="unknown model id 7"):
        sched.progress(7)
    with pytest.raises(ValueError, match="unknown model id 7"):
        sched.fail_model(7)


def test_late_report_of_a_dropped_model_is_ignored():
    sched = MopScheduler([1, 2], 2, 1, 0)
    hops = sched.next_hops()
    sched.fail_model(hops[0].model_id)
    assert hops[0].segment not in sched.in_flight
    sched.complete(hops[0])  # the coordinator heard back after dropping the model
    assert sched.progress(hops[0].model_id) == (0, 0)


def test_cost_aware_rule_by_hand():
    """Timed so far (a resume): model 1 at 5 s a hop, model 2 at 1 s; model 3 untimed, estimated at
    their mean, 3 s. Work left (2 segments, 1 epoch): 10, 2 and 6 s. Both segments have 9 s to
    host, so segment 0 picks first: model 1, then segment 1: model 3; model 2 waits."""
    sched = MopScheduler([1, 2, 3], segments=2, epochs=1, seed=0, observed=[(1, 5.0), (2, 1.0)])
    hops = sched.next_hops()
    assert [(h.segment, h.model_id) for h in hops] == [(0, 1), (1, 3)]
    sched.complete(hops[1], 3.0)  # model 3 left: 3 s; model 2 is the only one segment 1 can take
    assert [(h.segment, h.model_id) for h in sched.next_hops()] == [(1, 2)]


def test_cost_aware_rule_serves_the_segment_with_most_work_left_first():
    """Model 1 has visited segment 0 already. Work left: model 1 5 s (segment 1 only), model 2 2 s,
    model 3 6 s; segment 1 still hosts 9 s (models 1, 2, 3), segment 0 4 s (models 2, 3). So
    segment 1 picks first and takes model 3; segment 0 gets model 2."""
    sched = MopScheduler([1, 2, 3], segments=2, epochs=1, seed=0, completed=[(1, 0, 0)],
                         observed=[(1, 5.0), (2, 1.0)])
    assert [(h.segment, h.model_id) for h in sched.next_hops()] == [(1, 3), (0, 2)]


def test_cost_aware_and_random_rules_refuse_unknown_names_and_bad_durations():
    with pytest.raises(ValueError, match="scheduling must be one of cost, random, got 'lrpt'"):
        MopScheduler([1], 2, 1, 0, scheduling="lrpt")
    with pytest.raises(ValueError, match="bad duration -1.0"):
        MopScheduler([1], 2, 1, 0, observed=[(1, -1.0)])
    with pytest.raises(ValueError, match="unknown model id 5"):
        MopScheduler([1], 2, 1, 0, observed=[(5, 1.0)])


@pytest.mark.parametrize("kind", ["mop", "mop-random"])
@settings(max_examples=60, deadline=None)
@given(grid=grids(), data=st.data())
def test_stopped_models_never_train_again_and_added_models_train_fully(kind, grid, data):
    """What ASHA and TPE do to the schedule: a model stopped after some epoch gets no hop after it,
    a model added during the run (a larger id) trains every epoch, and the MOP invariants hold."""
    ids, segments, epochs, seed, durations = grid
    stop_after = frozenset(data.draw(st.lists(st.tuples(st.sampled_from(ids), st.integers(1, epochs)), max_size=4)))
    new_id = max(ids) + 1
    per_segment = data.draw(st.lists(st.floats(0.1, 5.0), min_size=segments, max_size=segments))
    when = data.draw(st.integers(1, len(ids) * segments * epochs))
    sched = SCHEDULERS[kind](ids, segments, epochs, seed)
    driver = Driver(sched, ids, segments, epochs, dict(durations))
    trace = driver.run(stop_after=stop_after, add_at=(when, new_id, per_segment))
    stopped_at = {}
    for m, e in sorted(stop_after, reverse=True):
        stopped_at[m] = e  # the earliest epoch count it is stopped at
    skip = frozenset((m, e, s) for m, first in stopped_at.items() for e in range(first, epochs)
                     for s in range(segments))
    joined = new_id in driver.ids  # False when the run ended before that instant
    check_schedule(trace, ids + ([new_id] if joined else []), segments, epochs, skip=skip)
    assert sched.stopped == frozenset(stopped_at) and not sched.failed
    with pytest.raises(ValueError, match="must be larger than every id so far"):
        sched.add_model(min(ids))


@pytest.mark.parametrize("one, many, expected", [
    (0.30, 0.60, 0.20 + 0.10 * 40),  # 4 batches: 0.1 s a batch on top of a 0.2 s fixed cost
    (0.30, 0.25, 0.25 / 4 * 40 + (0.30 - 0.25 / 4)),  # the short pass slowed by the load: its mean, not 0
    (0.30, 0.30, 0.30 / 4 * 40 + (0.30 - 0.30 / 4)),
])
def test_the_warm_up_prices_every_batch_even_when_the_load_slowed_its_short_pass(one, many, expected):
    """The warm-up's hop estimate, which orders the cost-aware rule before a model's first hop,
    grows with the hop's batches (issue 20: a slope clamped to 0 priced a large model's 40 batches
    at nothing, and the rule served it last)."""
    from ctq.indb import hop_estimate

    assert hop_estimate(one, many, 4, 40) == pytest.approx(expected)
    assert hop_estimate(one, many, 4, 80) > hop_estimate(one, many, 4, 40) > one

"""Property tests of the pure MOP and BSP schedulers, driven by a virtual clock (no I/O)."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from ctq.scheduler import BspScheduler, MopScheduler


def drive(scheduler, duration, segments):
    """Run a schedule to the end; returns hop records and the eligibility checks made on the way."""
    clock, heap, log, seq = 0.0, [], [], 0
    while not scheduler.done:
        for hop in scheduler.next_hops():
            seq += 1
            heapq.heappush(heap, (clock + duration(hop), seq, hop, clock))
        if isinstance(scheduler, MopScheduler):
            assert_no_idle_segment_with_eligible_model(scheduler, segments)
        end, _, hop, start = heapq.heappop(heap)
        clock = end
        scheduler.complete(hop)
        log.append((hop, start, end))
    return log


def assert_no_idle_segment_with_eligible_model(scheduler, segments):
    busy_models = {h.model_id for h in scheduler.in_flight.values()}
    for seg in range(segments):
        if seg in scheduler.in_flight:
            continue
        for model in scheduler._ids:  # white-box: every model the scheduler knows
            if model in busy_models or model in scheduler.failed:
                continue
            epochs_done, hops_done = scheduler.progress(model)
            if epochs_done >= scheduler._epochs:
                continue
            visited = scheduler._visited[scheduler._index[model]]
            assert seg in visited, f"segment {seg} idle while model {model} could train on it"


cases = st.tuples(st.integers(1, 8), st.integers(1, 5), st.integers(1, 3), st.integers(0, 10_000),
                  st.lists(st.floats(0.1, 10.0), min_size=8, max_size=8))


def check_invariants(log, models, segments, epochs):
    keys = [(h.model_id, h.epoch, h.segment) for h, _, _ in log]
    assert len(keys) == len(set(keys)) == models * segments * epochs
    for i, (a, sa, ea) in enumerate(log):
        for b, sb, eb in log[i + 1:]:
            if a.model_id == b.model_id or a.segment == b.segment:
                assert ea <= sb or eb <= sa, (a, b)
    for m in range(1, models + 1):
        mine = [(h, s, e) for h, s, e in log if h.model_id == m]
        for ep in range(epochs - 1):
            assert max(e for h, s, e in mine if h.epoch == ep) <= min(s for h, s, e in mine if h.epoch == ep + 1)
        lasts = [h for h, _, _ in mine if h.last_of_epoch]
        assert sorted(h.epoch for h in lasts) == list(range(epochs))
        for h in lasts:
            assert max((e for g, s, e in mine if g.epoch == h.epoch)) == next(e for g, s, e in mine if g == h)


@settings(max_examples=60, deadline=None)
@given(cases)
def test_mop_invariants(case):
    models, segments, epochs, seed, speeds = case
    scheduler = MopScheduler(list(range(1, models + 1)), segments, epochs, seed)
    log = drive(scheduler, lambda h: speeds[h.model_id % 8] * (1 + h.segment / 10), segments)
    check_invariants(log, models, segments, epochs)


@settings(max_examples=40, deadline=None)
@given(cases)
def test_bsp_invariants_and_round_barrier(case):
    models, segments, epochs, seed, speeds = case
    scheduler = BspScheduler(list(range(1, models + 1)), segments, epochs, seed)
    log = drive(scheduler, lambda h: speeds[h.model_id % 8], segments)
    check_invariants(log, models, segments, epochs)
    for h, s, e in log:  # a hop never starts while a hop that started earlier is still running
        assert all(not (s2 < s < e2) for _, s2, e2 in log)


@settings(max_examples=40, deadline=None)
@given(cases, st.integers(0, 200))
def test_resume_from_any_prefix_repeats_nothing(case, cut):
    models, segments, epochs, seed, speeds = case
    full = drive(MopScheduler(list(range(1, models + 1)), segments, epochs, seed), lambda h: speeds[h.model_id % 8],
                 segments)
    done = [(h.model_id, h.epoch, h.segment) for h, _, _ in full[: cut % (len(full) + 1)]]
    rest = drive(MopScheduler(list(range(1, models + 1)), segments, epochs, seed, completed=done),
                 lambda h: speeds[h.model_id % 8], segments)
    keys = done + [(h.model_id, h.epoch, h.segment) for h, _, _ in rest]
    assert sorted(keys) == sorted((h.model_id, h.epoch, h.segment) for h, _, _ in full)


def test_same_seed_same_schedule_and_failed_model_stops():
    a = drive(MopScheduler([1, 2, 3, 4], 2, 2, seed=3), lambda h: 1 + h.model_id % 3, 2)
    b = drive(MopScheduler([1, 2, 3, 4], 2, 2, seed=3), lambda h: 1 + h.model_id % 3, 2)
    assert [x[0] for x in a] == [x[0] for x in b]
    scheduler = MopScheduler([1, 2, 3], 2, 2, seed=0)
    first = scheduler.next_hops()
    scheduler.fail_model(first[0].model_id)
    for hop in first[1:]:
        scheduler.complete(hop)
    log = drive(scheduler, lambda h: 1.0, 2)
    assert all(h.model_id != first[0].model_id for h, _, _ in log)

"""The makespan simulator: hand-checked cases, bounds, exact agreement with the schedulers, the
Cerebro-DS closed form, and the shape of a many-models grid (`make bench` times 10,000 x 1,024)."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctq import simulate
from ctq.scheduler import BspScheduler, MopScheduler
from ctq.simulate import _mop_makespan


def driven_makespan(scheduler, d: np.ndarray) -> float:
    """Makespan of a scheduler on a virtual clock, completing every hop of an instant first."""
    events, t = [], 0.0
    for hop in scheduler.next_hops():
        heapq.heappush(events, (t + d[hop.model_id, hop.segment], hop.segment, hop))
    while events:
        t = events[0][0]
        while events and events[0][0] == t:
            hop = heapq.heappop(events)[2]
            scheduler.complete(hop, d[hop.model_id, hop.segment])
        for hop in scheduler.next_hops():
            heapq.heappush(events, (t + d[hop.model_id, hop.segment], hop.segment, hop))
    assert scheduler.done
    return t


@st.composite
def grids(draw, max_models=10, max_segments=6):
    models = draw(st.integers(1, max_models))
    segments = draw(st.integers(1, max_segments))
    shape = (models, segments)
    cells = models * segments
    # Integers: many hops end at the same instant (ties); floats: none do.
    values = draw(
        st.one_of(
            st.lists(st.integers(1, 4).map(float), min_size=cells, max_size=cells),
            st.lists(st.floats(0.1, 5.0), min_size=cells, max_size=cells),
        )
    )
    return np.array(values).reshape(shape), draw(st.integers(1, 3)), draw(st.integers(0, 2**16))


@settings(max_examples=150, deadline=None)
@given(grid=grids())
def test_simulation_equals_driving_the_schedulers(grid):
    """Each simulated makespan is the scheduler's own, driven here on a virtual clock: for the
    cost-aware rule simulate drives MopScheduler too, so this checks its clock, not the rule (the
    rule's makespans are checked by hand below); the random rule's fast engine (_MopEngine) and BSP
    are separate code from the schedulers they replay."""
    d, epochs, seed = grid
    models, segments = d.shape
    mop = driven_makespan(MopScheduler(range(models), segments, epochs, seed, scheduling="random"), d)
    learning = driven_makespan(MopScheduler(range(models), segments, epochs, seed), d)
    warmed = MopScheduler(range(models), segments, epochs, seed)
    for m in range(models):  # what a run's warm-up timing tells the scheduler
        warmed.expect(m, float(d[m].mean()))
    cost = driven_makespan(warmed, d)
    bsp = driven_makespan(BspScheduler(range(models), segments, epochs, seed), d)
    assert simulate.simulate(d, segments, "mop", epochs, seed, "random").makespan == mop
    assert simulate.simulate(d, segments, "mop", epochs, seed).makespan == cost
    assert simulate.simulate(d, segments, "mop", epochs, seed, warmup_estimates=False).makespan == learning
    assert simulate.simulate(d, segments, "bsp", epochs, seed).makespan == bsp
    # Both phases of the MOP engine, forced: the vectorized one from the start, and none of it.
    assert _mop_makespan(d, epochs, seed, min_batch=0) == mop
    assert _mop_makespan(d, epochs, seed, min_batch=float("inf")) == mop


@pytest.mark.parametrize(
    "models, segments, epochs, kind",
    [
        (300, 64, 1, "hetero"),  # mostly vectorized, sequential tail
        (300, 64, 1, "uniform"),
        (120, 48, 3, "hetero"),  # epochs: segments wait for models at epoch boundaries
        (40, 100, 1, "uniform"),  # fewer models than segments: many segments wait
        (70, 64, 2, "uniform"),
    ],
)
def test_both_phases_of_the_fast_engine_replay_the_scheduler_on_larger_grids(models, segments, epochs, kind):
    """The fast engine, all vectorized and all sequential, against MopScheduler (random rule)
    driven hop by hop: the engine is separate code, the scheduler is what a run uses."""
    rng = np.random.default_rng(models + segments)
    if kind == "hetero":
        d = simulate.heterogeneous_durations(models, segments, 0.7, 6.0, seed=3)
    else:
        d = rng.uniform(1.0, 6.0, (models, segments))
    driven = driven_makespan(MopScheduler(range(models), segments, epochs, 5, scheduling="random"), d)
    assert _mop_makespan(d, epochs, 5, min_batch=0) == driven
    assert _mop_makespan(d, epochs, 5, min_batch=float("inf")) == driven


def test_two_segments_two_fast_one_slow_model_by_hand():
    # Sub-epochs 1, 1 and 3 s on either segment. Total work 10 s; the slow model alone needs 6 s.
    d = [1.0, 1.0, 3.0]
    # BSP: N = 3 rounds of which the slow model is in 2 (cost 3 each), the third costs 1.
    assert {simulate.simulate(d, 2, "bsp", seed=s).makespan for s in range(20)} == {7.0}
    # MOP: 6 if the slow model starts at once (2 fast hops fill the other segment meanwhile);
    # 7 or 8 if random preferences start both fast models first, leaving a segment to wait.
    mop = {simulate.simulate(d, 2, "mop", seed=s, scheduling="random").makespan for s in range(20)}
    assert mop == {6.0, 7.0, 8.0}
    # Cost-aware, knowing from the warm-up that the slow model is slow: it starts at once, always 6.
    assert {simulate.simulate(d, 2, "mop", seed=s).makespan for s in range(20)} == {6.0}
    # Learning only from completed hops: nothing is timed at t=0, so random's first picks; when
    # both fast models start first, at t=1 the untimed slow one (estimated at their 1 s, 2 hops
    # left) goes before the fast ones' second hops: 3 + 3 s from t=1, never 8.
    cost = {simulate.simulate(d, 2, "mop", seed=s, warmup_estimates=False).makespan for s in range(20)}
    assert cost == {6.0, 7.0}
    result = simulate.simulate(d, 2, "mop", seed=0)
    assert result.lower_bound == 6.0
    assert result.utilization == pytest.approx(10.0 / (2 * result.makespan))


def test_cost_aware_rule_over_two_epochs_by_hand():
    """Hops of 3, 1 and 1 s (models A, B, C) on 2 segments, 2 epochs, estimates from the warm-up.
    Work left A 12, B 4, C 4; both segments host 10: segment 0 (the lower) takes A, segment 1 one
    of B, C (X; the other Y) at 0-1, then Y at 1-2; segment 1 idles 2-3 (X and Y need segment 0).
    t=3: A (9 left) takes segment 1, the only one it has not visited, to 6; X segment 0 at 3-4,
    Y 4-5, then X or Y 5-6 (epoch 2). t=6: A (6 left) takes segment 1 (5 to host, segment 0 4) to
    9, the one of X, Y that has not visited segment 0 takes it 6-7, the other waits for segment 1.
    t=9: A segment 0 to 12; X, Y segment 1 9-10 and 10-11. Makespan 12, A's own 4 x 3 s, whatever
    the seed; the random rule, starting B and C first, takes up to 14."""
    d = [3.0, 1.0, 1.0]
    assert {simulate.simulate(d, 2, "mop", epochs=2, seed=s).makespan for s in range(30)} == {12.0}
    assert {simulate.simulate(d, 2, "mop", epochs=2, seed=s, scheduling="random").makespan
            for s in range(30)} == {12.0, 13.0, 14.0}


def test_slow_segment_by_hand():
    # Segment 1 is half as fast. MOP: one model waits 1 s for the other to leave segment 1.
    d = np.array([[1.0, 2.0], [1.0, 2.0]])
    c = simulate.compare(d, 2)
    # Lower bound: segment 1 must host both models, 2 s each, whatever the schedule.
    assert (c.mop.makespan, c.bsp.makespan, c.mop.lower_bound) == (4.0, 4.0, 4.0)
    assert c.speedup == 1.0


def test_one_slow_model_bounds_everything():
    # The slow model alone needs 4 + 4 s; BSP: it is in 2 of the 3 rounds, the third costs 1.
    c = simulate.compare(np.array([[1.0, 1.0], [1.0, 1.0], [4.0, 4.0]]), 2)
    assert c.mop.lower_bound == c.bsp.lower_bound == 8.0
    assert c.mop.makespan == 8.0 and c.bsp.makespan == 9.0


@pytest.mark.parametrize("schedule", ["mop", "bsp"])
def test_degenerate_grids(schedule):
    assert simulate.simulate([1.0, 2.0, 3.0], 1, schedule, epochs=2).makespan == 12.0
    assert simulate.simulate(np.array([[1.0, 2.0, 3.0]]), 3, schedule, epochs=2).makespan == 12.0


@settings(max_examples=40, deadline=None)
@given(grid=grids(max_models=20, max_segments=8))
def test_both_schedules_respect_the_lower_bound(grid):
    d, epochs, seed = grid
    c = simulate.compare(d, d.shape[1], epochs, seed)
    for r in (c.mop, c.bsp):
        assert r.makespan >= r.lower_bound * (1 - 1e-12)
        assert 0 < r.utilization <= 1 + 1e-12


def test_mop_beats_bsp_on_heterogeneous_grids():
    for seed in range(5):
        for segments, speed in [(4, None), (8, [1, 1, 2, 2, 1, 0.5, 1, 1])]:
            d = simulate.heterogeneous_durations(40, segments, 0.8, 8.0, seed, segment_speed=speed)
            c = simulate.compare(d, segments, epochs=2, seed=seed)
            assert c.mop.makespan <= c.bsp.makespan
            assert c.mop.utilization > c.bsp.utilization


def test_homogeneous_grid_has_little_to_gain_or_lose():
    # BSP's rotation is perfect here; greedy MOP may leave a segment idle near the end.
    assert 0.9 <= simulate.compare(np.ones((16, 4)), 4).speedup <= 1.0


def test_speedup_tracks_the_closed_form_with_many_models():
    d = simulate.heterogeneous_durations(2000, 2, 0.8, 8.0, seed=1)
    theory = simulate.theory_speedup(0.8, 8.0, 2)
    assert theory == pytest.approx(3.52 / 2.4)  # (0.64 + 0.36 * 8) / (0.8 + 0.2 * 8)
    assert simulate.compare(d, 2, seed=1, scheduling="random").speedup == pytest.approx(theory, rel=0.10)


def test_theory_has_no_gain_with_one_worker_or_no_heterogeneity():
    assert simulate.theory_speedup(0.8, 8.0, 1) == pytest.approx(1.0)
    assert simulate.theory_speedup(0.3, 1.0, 16) == pytest.approx(1.0)
    # more workers: a round is more often slowed down; bounded by L / mean
    assert simulate.theory_speedup(0.9, 20.0, 32) < 20.0 / 2.9


def test_heterogeneous_durations():
    d = simulate.heterogeneous_durations(1000, 3, 0.8, 8.0, seed=4, segment_speed=[1, 2, 0.5])
    assert d.shape == (1000, 3)
    assert set(np.unique(d[:, 0])) == {1.0, 8.0}
    assert np.all(d[:, 1] == d[:, 0] / 2) and np.all(d[:, 2] == d[:, 0] * 2)
    assert 0.75 < np.mean(d[:, 0] == 1.0) < 0.85
    assert np.array_equal(d, simulate.heterogeneous_durations(1000, 3, 0.8, 8.0, 4, [1, 2, 0.5]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p_fast": 1.5}, "p_fast must be a probability"),
        ({"slow_ratio": 0}, "slow_ratio and fast_seconds must be > 0"),
        ({"segment_speed": [1.0]}, "segment_speed must be 2 positive numbers"),
        ({"segment_speed": [1.0, 0.0]}, "segment_speed must be 2 positive numbers"),
        ({"models": 0}, "models and segments must be >= 1"),
    ],
)
def test_heterogeneous_durations_rejects_bad_input(kwargs, message):
    args = {"models": 4, "segments": 2, "p_fast": 0.5, "slow_ratio": 4.0, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        simulate.heterogeneous_durations(**args)


@pytest.mark.parametrize(
    "durations, segments, kwargs, message",
    [
        ([[1.0, 2.0]], 3, {}, r"must be \(models,\) or \(models, 3\), got shape \(1, 2\)"),
        ([1.0, 0.0], 2, {}, "durations must be finite and > 0"),
        ([1.0, np.nan], 2, {}, "durations must be finite and > 0"),
        ([1.0], 0, {}, "segments must be >= 1"),
        ([1.0], 2, {"schedule": "rr"}, "schedule must be 'mop' or 'bsp'"),
        ([1.0], 2, {"epochs": 0}, "epochs must be >= 1"),
        ([1.0], 2, {"seed": -2}, "seed must be >= 0"),
        ([1.0], 2, {"scheduling": "fifo"}, "scheduling must be one of cost, random, got 'fifo'"),
    ],
)
def test_simulate_rejects_bad_input(durations, segments, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate.simulate(durations, segments, **kwargs)


def test_replay_keeps_the_runs_placement_at_its_own_count_and_rescales_means_elsewhere():
    # measured on 2 segments: model 1 takes 1 s on segment 0 and 3 s on segment 1 (mean 2), model 2 4 s
    hops = [(1, 0, 1.0), (1, 1, 3.0), (2, 0, 4.0), (2, 1, 4.0)]
    out = simulate.replay(hops, [1, 2, 4], epochs=2, seed=3)
    assert set(out) == {1, 2, 4}
    assert out[2] == simulate.compare([[1.0, 3.0], [4.0, 4.0]], 2, epochs=2, seed=3)
    assert out[4] == simulate.compare([1.0, 2.0], 4, epochs=2, seed=3)  # half the data per hop
    assert out[1].mop.makespan == 2 * (4.0 + 8.0)  # one segment: everything in sequence


def test_replay_adds_the_coordinators_gap_to_every_hop():
    hops = [(1, 0, 1.0), (1, 1, 3.0), (2, 0, 4.0), (2, 1, 4.0)]
    out = simulate.replay(hops, [2], epochs=1, gap_seconds=0.5, measured_segments=2)
    assert out[2] == simulate.compare([[1.5, 3.5], [4.5, 4.5]], 2)
    # a segment without a hop of that model (a run cut short) takes the model's mean there
    out = simulate.replay([(1, 0, 1.0), (2, 0, 4.0), (2, 1, 2.0)], [2], measured_segments=2)
    assert out[2] == simulate.compare([[1.0, 1.0], [4.0, 2.0]], 2)
    with pytest.raises(ValueError, match="bad gap"):
        simulate.replay(hops, [2], gap_seconds=-1.0)


def test_replay_rejects_empty_or_bad_records():
    with pytest.raises(ValueError, match="no hops to replay"):
        simulate.replay([], [2])
    with pytest.raises(ValueError, match="bad duration -1"):
        simulate.replay([(1, 0, -1.0)], [2])


def test_format_is_a_small_table():
    text = simulate.compare(simulate.heterogeneous_durations(12, 3, 0.5, 4.0, seed=2), 3).format()
    lines = text.splitlines()
    assert lines[0] == "12 models x 3 segments x 1 epoch(s); times in s"
    assert lines[1].split() == ["schedule", "makespan", "lower", "bound", "utilization"]
    assert lines[2].startswith("MOP (cost)") and lines[3].startswith("MOP (random)")
    assert lines[4].startswith("BSP")
    assert lines[5].startswith("speedup (BSP / MOP): ") and lines[5].endswith("x")
    assert lines[6].startswith("cost-aware gain (MOP random / MOP cost): ") and lines[6].endswith("x")


def test_many_more_models_than_segments():
    """The shape of the 10,000 x 1,024 case at a tenth of its size (the full size is timed by
    `make bench`): MOP barely idles, BSP pays a slow model in every round."""
    d = simulate.heterogeneous_durations(1_000, 128, 0.8, 8.0, seed=0)
    c = simulate.compare(d, 128, scheduling="random")  # the fast engine's regime
    assert c.mop.makespan >= c.mop.lower_bound
    assert c.mop.utilization > 0.97
    assert c.bsp.makespan == 1_000 * 8.0  # 1,000 rounds, each with a slow model in it
    assert c.speedup > 3


def test_cost_aware_mop_shortens_the_tail_of_a_heterogeneous_grid():
    """The issue's grid shape (8 fast, 2 slow models, 2 segments, 2 epochs) over 30 seeds: the
    cost-aware rule (with the warm-up's estimates) is never slower than the random one, and ends
    at the lower bound (no idle tail) at least as often."""
    cost, rand, cost_tight, rand_tight = [], [], 0, 0
    for seed in range(30):
        d = simulate.heterogeneous_durations(10, 2, 0.8, 8.0, seed)
        c = simulate.compare(d, 2, epochs=2, seed=seed)
        assert c.mop.makespan <= c.mop_random.makespan, seed
        cost.append(c.mop.makespan)
        rand.append(c.mop_random.makespan)
        cost_tight += c.mop.makespan == c.mop.lower_bound
        rand_tight += c.mop_random.makespan == c.mop.lower_bound
    assert np.mean(cost) <= np.mean(rand)
    assert cost_tight >= rand_tight

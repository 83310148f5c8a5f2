"""The makespan simulator: hand-checked small cases, bounds, and the Cerebro-DS closed form."""

from __future__ import annotations

import numpy as np
import pytest

from ctq import simulate


def test_two_segments_one_slow_model_by_hand():
    # models: 1 s, 1 s, 4 s per sub-epoch; 2 segments, 1 epoch: total work 12 s -> bound 6 s
    d = np.array([[1.0, 1.0], [1.0, 1.0], [4.0, 4.0]])
    c = simulate.compare(d, 2)
    assert c.mop.lower_bound == pytest.approx(8.0)  # the slow model alone needs 4 + 4
    assert c.mop.makespan >= c.mop.lower_bound
    assert c.bsp.makespan >= c.mop.makespan
    # BSP: N = 3 rounds, each costs its slowest hop; the slow model is in 2 of the 3 rounds
    assert c.bsp.makespan == pytest.approx(4 + 4 + 1)


def test_mop_beats_bsp_on_heterogeneous_grids_and_respects_bounds():
    for seed in range(5):
        d = simulate.heterogeneous_durations(40, 4, 0.8, 8.0, seed=seed)
        c = simulate.compare(d, 4, epochs=2, seed=seed)
        assert c.mop.makespan <= c.bsp.makespan
        assert c.mop.makespan >= c.mop.lower_bound - 1e-9
        assert c.bsp.makespan >= c.bsp.lower_bound - 1e-9
        assert 0 < c.mop.utilization <= 1


def test_speedup_tracks_the_closed_form_with_many_models():
    d = simulate.heterogeneous_durations(2000, 2, 0.8, 8.0, seed=1)
    speedup = simulate.compare(d, 2, seed=1).speedup
    assert speedup == pytest.approx(simulate.theory_speedup(0.8, 8.0, 2), rel=0.10)


def test_homogeneous_grid_has_little_to_gain_or_lose():
    # BSP's rotation is perfect here; random greedy MOP can leave a segment idle near the end
    d = np.ones((16, 4))
    assert 0.9 <= simulate.compare(d, 4).speedup <= 1.0


def test_replay_rescales_to_other_segment_counts():
    hops = [(m, s, 1.0 + (m % 2)) for m in range(1, 9) for s in range(2)]
    out = simulate.replay(hops, [1, 2, 4])
    assert set(out) == {1, 2, 4}
    assert out[1].mop.makespan > out[2].mop.makespan > out[4].mop.makespan

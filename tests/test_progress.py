"""What a run says while it trains (ctq.progress), from a run plan as the catalog gives it: pure,
no server."""

from __future__ import annotations

import io

from ctq.api import RunPlan
from ctq.coordinator import HopResult
from ctq.rules import Hyperparameters, ModelSpec
from ctq.scheduler import Hop
from ctq.progress import LogProgress


def test_the_log_names_the_models_a_search_asks_for_during_the_run():
    """A random or TPE search adds models as segments free up: the log names them like the
    models the run started with (it printed their ids as their names before)."""
    plan = RunPlan(run_id=3, name="tpe", schedule="mop", segments=2, epochs=1, seed=0, metric="val_loss",
                   metric_mode="min", cores_per_segment=None, failed=frozenset(), completed=(),
                   pack={"settings": {"task": "classification"}}, method="tpe", search={"samples": 2},
                   specs={1: ModelSpec("first/adam", {"layers": []}, Hyperparameters(), 11)})
    out = io.StringIO()
    log = LogProgress(plan, verbose=True, stream=out)
    log.model_added(2, "second/sgd")
    for model_id in (1, 2):
        log.hop_finished(HopResult(Hop(model_id, 0, 1, True), 0.5, 0.7, 10, 0.1, 0.6, 0.65, 0.2))
    log.model_failed(2, "diverged")
    text = out.getvalue()
    assert "model 1 (first/adam) epoch 1/1" in text and "model 2 (second/sgd) epoch 1/1" in text, text
    assert "model 2 (second/sgd) failed: diverged" in text, text


def test_the_eta_counts_the_turn_around_between_hops():
    """Hops of 10 ms whose segments wait 20 ms between them (the coordinator's turn-around, which
    such hops spend as much time in): after 4 of 40 hops on 2 segments, 36 hops are left at 30 ms a
    segment's hop, 0.54 s. Counting the hops' own 10 ms only said a third of it (a user trial: 'ETA
    11s' with 16 s left)."""
    from ctq.progress import Eta

    plan = RunPlan(run_id=4, name="small", schedule="mop", segments=2, epochs=2, seed=0, metric="val_loss",
                   metric_mode="min", cores_per_segment=None, failed=frozenset(), completed=(),
                   pack={"settings": {"task": "classification"}}, method="grid", search={},
                   specs={m: ModelSpec(f"m{m}", {"layers": []}, Hyperparameters(), m) for m in range(1, 11)})
    now = [0.0]
    eta = Eta(plan, clock=lambda: now[0])
    eta.estimates({m: 0.01 for m in range(1, 11)})
    for step, (model_id, segment) in enumerate([(1, 0), (2, 1), (3, 0), (4, 1)]):
        now[0] = 0.03 * (step // 2 + 1)  # each segment: 20 ms of turn-around, then a hop of 10 ms
        eta.finished(model_id, 0.01, segment)
    assert abs(eta.seconds() - 36 * 0.03 / 2) < 1e-9, eta.seconds()

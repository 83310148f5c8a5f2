"""Adaptive search: ASHA's rung decisions by hand, an ASHA run end to end on the real server (stopped
models never train again, the best reaches max_epochs), and a kill -9 in the middle of one resumed to
the same decisions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import signal

import pytest

from conftest import stored_state, write_grid
from ctq import api
from ctq.config import METRICS, TASKS, parse_config
from ctq.errors import ConfigError, RunFailed, UsageError
from ctq.metrics import Metric
from ctq.search import Decision
from ctq.search.asha import Asha, pending, rung_epochs
from ctq.search.hyperband import Hyperband
from test_reliability import assert_consistent, start_train

on_the_server = pytest.mark.asyncio(loop_scope="session")


# ------------------------------------------------------------------------------- pure rules
def test_each_search_method_is_one_module_of_ctq_search_named_by_it():
    """Adding a method is adding its module: search.method X is class METHODS[X] of ctq/search/X.py,
    and the configuration accepts exactly those names."""
    from ctq.config import EARLY_STOPPING_METHODS, SEARCH_METHODS
    from ctq.search import METHODS

    assert SEARCH_METHODS == tuple(METHODS) == ("grid", "random", "asha", "hyperband", "tpe")
    assert {name: cls.__module__ for name, cls in METHODS.items()} == {name: f"ctq.search.{name}" for name in METHODS}
    assert EARLY_STOPPING_METHODS == ("asha", "hyperband")


def test_rungs_are_grace_period_times_powers_of_the_reduction_factor_below_max_epochs():
    assert rung_epochs(1, 3, 9) == (1, 3)
    assert rung_epochs(1, 3, 10) == (1, 3, 9)
    assert rung_epochs(2, 2, 16) == (2, 4, 8)
    assert rung_epochs(1, 3, 3) == (1,)
    assert rung_epochs(3, 3, 3) == ()  # the grace period is the whole budget: nothing to decide


def test_promotions_by_hand_minimizing():
    """reduction_factor 3, val_loss. At rung 0 the n-th result goes on if it ranks within the best
    max(1, n // 3) of the n so far (its own included):
    n=1 0.50 rank 1 <= 1 promote | n=2 0.40 rank 1 <= 1 promote | n=3 0.60 rank 3 > 1 stop |
    n=4 0.30 rank 1 promote | n=5 0.45 rank 3 > 1 stop | n=6 0.35 rank 2 <= 2 promote |
    n=7 0.70 rank 7 > 2 stop. At rung 1 (epoch 3) the first result always goes on, the second
    only if better: 0.30 promote, then 0.33 rank 2 > 1 stop."""
    asha = Asha(grace_period=1, reduction_factor=3, max_epochs=9, mode="min")
    assert asha.rungs == (1, 3)
    results = [(1, 0.50), (2, 0.40), (3, 0.60), (4, 0.30), (5, 0.45), (6, 0.35), (7, 0.70)]
    outcomes = [asha.decide(m, 1, v).promoted for m, v in results]
    assert outcomes == [True, True, False, True, False, True, False]
    assert asha.decide(4, 2, 0.2) is None  # not a rung
    first, second = asha.decide(4, 3, 0.30), asha.decide(6, 3, 0.33)
    assert (first.rung, first.promoted, second.promoted) == (1, True, False)
    assert second.reason == "rank 2 of 2 results at rung 1 (epoch 3); the best 1 go on"
    assert asha.decide(9, 9, 0.1) is None  # max_epochs is no rung: the model is done


def test_promotions_by_hand_maximizing_and_results_without_a_value():
    """val_accuracy: higher is better. 0.7 promote (first) | 0.6 rank 2 of 2 stop | 0.9 promote |
    NaN (a model without a finite metric) stop, and it counts for nobody's rank | 0.8 rank 2 of 4,
    best 1: stop | 0.95 rank 1 promote | 0.85 rank 3 of 6, best 2: stop."""
    asha = Asha(1, 3, 3, "max")
    values = [0.7, 0.6, 0.9, math.nan, 0.8, 0.95, 0.85]
    decided = [asha.decide(m, 1, v) for m, v in enumerate(values, start=1)]
    assert [d.promoted for d in decided] == [True, False, True, False, False, True, False]
    assert decided[3].reason == "no finite metric after epoch 1"
    assert decided[6].reason == "rank 3 of 6 results at rung 0 (epoch 1); the best 2 go on"
    assert not asha.decide(8, 1, None).promoted
    with pytest.raises(ValueError, match="model 1 already has a result at rung 0"):
        asha.decide(1, 1, 0.5)
    with pytest.raises(ValueError, match="model 9 has no result at epoch 1, a rung before epoch 3"):
        Asha(1, 3, 9, "max").decide(9, 3, 0.5)


def test_replay_rebuilds_the_state_and_refuses_a_record_the_rule_contradicts():
    recorded = [Decision(1, 0, 1, 0.5, True, ""), Decision(2, 0, 1, 0.4, True, ""), Decision(3, 0, 1, 0.6, False, "")]
    asha = Asha(1, 3, 9, "min")
    asha.replay(recorded)
    # the state is the one after those three: a fourth at 0.45 ranks 2nd of 4 (best 1 goes on)
    assert not asha.decide(4, 1, 0.45).promoted
    with pytest.raises(ValueError, match="recorded decision on model 2 at epoch 1 \\(promote\\)"):
        Asha(1, 3, 9, "max").replay(recorded)


def test_pending_results_are_the_undecided_rungs_in_finishing_order():
    epochs = [(1, 1), (2, 1), (1, 2), (3, 1), (2, 2), (1, 3), (4, 1)]
    assert pending(lambda m: (1, 3), epochs, decided=[(1, 1), (2, 1)], stopped=[2]) == [(3, 1), (1, 3), (4, 1)]
    # Hyperband (seed 0): model 6 is in bracket 1, whose first rung is epoch 3; model 1 in bracket 2 (none)
    rungs = Hyperband(1, 3, 9, "min", seed=0).model_rungs
    assert pending(rungs, [(6, 1), (2, 1), (1, 1), (6, 3), (1, 3)], decided=[], stopped=[]) == [(2, 1), (6, 3)]


@pytest.mark.parametrize("bad", [(0, 3, 3, "min"), (1, 1, 3, "min"), (1, 3, 3, "up")])
def test_bad_asha_arguments_are_named(bad):
    with pytest.raises(ValueError):
        Asha(*bad)
    with pytest.raises(ValueError):
        Hyperband(*bad, seed=0)
    with pytest.raises(ValueError, match="max_epochs \\(2\\) is below grace_period \\(3\\)"):
        Hyperband(3, 3, 2, "min", seed=0)


# ------------------------------------------------------------------------------ Hyperband
def test_hyperband_brackets_by_hand():
    """grace_period 1, reduction_factor 3, max_epochs 9: floor(log3(9 / 1)) + 1 = 3 brackets, with
    trial budgets ceil(3 * 3**s / (s + 1)) for s = 2, 1, 0: 9, 5, 3 (shares 0-8, 9-13, 14-16 of
    17). Seed 0: the study is ctq-seed-0 and model m trial m - 1; crc32("ctq-seed-0_0") =
    2730789797 = 16 mod 17: model 1 in bracket 2; crc32("ctq-seed-0_5") = 3534651178 = 9 mod 17:
    model 6 in bracket 1; models 2-5 and 7-9 (crc32 0, 3, 3, 6, 7, 1, 0 mod 17) in bracket 0.
    Bracket b's rungs are those from rung b on: (1, 3), (3,), and none (9 is max_epochs)."""
    hyperband = Hyperband(1, 3, 9, "min", seed=0)
    assert (hyperband.brackets, hyperband.rungs) == (3, (1, 3))
    assert [hyperband.bracket(m) for m in range(1, 10)] == [2, 0, 0, 0, 0, 1, 0, 0, 0]
    assert [hyperband.model_rungs(m) for m in (2, 6, 1)] == [(1, 3), (3,), ()]
    # 243 / 1 is 3**5, but Optuna's floor(math.log(243, 3)) is floor(4.999999999999999): 5 brackets
    assert Hyperband(1, 3, 243, "min", seed=0).brackets == 5
    assert Hyperband(1, 3, 2, "min", seed=0).brackets == 1  # below one reduction: ASHA alone


@pytest.mark.parametrize("grace, factor, top", [(1, 3, 9), (2, 3, 20), (1, 2, 4), (1, 3, 243), (1, 4, 64)])
def test_hyperband_brackets_are_optunas_own(grace, factor, top):
    """ctq's reading of the bracket rule agrees with Optuna's own (a private method of the
    installed HyperbandPruner, read here only to pin the two together across Optuna versions)."""
    for seed in (0, 7):
        hyperband = Hyperband(grace, factor, top, "max", seed=seed)
        pruner, study = hyperband._study.pruner, hyperband._study
        pruner._try_initialization(study)
        for model_id in range(1, 41):
            assert pruner._get_bracket_id(study, hyperband._trial(model_id)) == hyperband.bracket(model_id)


def test_hyperband_promotions_by_hand():
    """The brackets above (seed 0), val_loss. Bracket 0 is ASHA: at rung 0 the results 0.50, 0.40,
    0.60, 0.30, 0.45 of models 2, 3, 4, 5, 7 go promote, promote, stop (rank 3 > 1), promote, stop
    (rank 3 of 5 > 1). Model 6 (bracket 1) reports 0.90 after epoch 1: no decision, whatever its
    value (ASHA, one bracket for all, stops it there: rank 6 of 6). At rung 1 (epoch 3): model 5
    (0.30) is the first of bracket 0, promoted; model 6 (0.80) the first of bracket 1: promoted,
    though 0.30 is better; model 3 (0.35) is 2nd of 2 in bracket 0: stopped. Model 1 (bracket 2)
    is never decided on."""
    hyperband, asha = Hyperband(1, 3, 9, "min", seed=0), Asha(1, 3, 9, "min")
    results = [(2, 0.50), (3, 0.40), (4, 0.60), (5, 0.30), (7, 0.45)]
    assert [hyperband.decide(m, 1, v).promoted for m, v in results] == [True, True, False, True, False]
    assert hyperband.decide(6, 1, 0.90) is None and hyperband.decide(1, 1, math.nan) is None
    first = hyperband.decide(5, 3, 0.30)
    other_bracket = hyperband.decide(6, 3, 0.80)
    second = hyperband.decide(3, 3, 0.35)
    assert [(d.rung, d.epoch, d.promoted) for d in (first, other_bracket, second)] == [
        (1, 3, True), (1, 3, True), (1, 3, False)]
    assert other_bracket.reason == "rank 1 of 1 results of bracket 1 at rung 1 (epoch 3); the best 1 go on"
    assert second.reason == "rank 2 of 2 results of bracket 0 at rung 1 (epoch 3); the best 1 go on"
    assert hyperband.decide(1, 3, 5.0) is None and hyperband.decide(1, 9, 5.0) is None
    asha_outcomes = [asha.decide(m, 1, v).promoted for m, v in results + [(6, 0.90)]]
    assert asha_outcomes == [True, True, False, True, False, False]


def test_hyperband_replay_reproduces_the_decisions_and_refuses_a_tampered_one():
    """Decisions made by one Hyperband, replayed in their order by a new one (as a resume does),
    come out the same and leave the same state; a record whose value was changed, or a decision on
    a model at an epoch that is not a rung of its bracket, is refused."""
    made = Hyperband(1, 3, 9, "min", seed=0)
    recorded = [made.decide(m, 1, v) for m, v in [(2, 0.50), (3, 0.40), (4, 0.60), (5, 0.30)]]
    recorded.append(made.decide(6, 3, 0.80))
    again = Hyperband(1, 3, 9, "min", seed=0)
    again.replay(recorded)
    assert again.decide(7, 1, 0.35) == made.decide(7, 1, 0.35)  # rank 2 of 5, the best 1: stop
    tampered = [*recorded[:2], dataclasses.replace(recorded[2], value=0.1), *recorded[3:]]
    with pytest.raises(ValueError, match="model 4 at epoch 1 \\(stop\\) is not what Hyperband decides now"):
        Hyperband(1, 3, 9, "min", seed=0).replay(tampered)
    with pytest.raises(ValueError, match="model 6 at epoch 1 \\(promote\\) is not what Hyperband decides"):
        Hyperband(1, 3, 9, "min", seed=0).replay([Decision(6, 0, 1, 0.80, True, "")])  # bracket 1: no rung 0


def test_a_bracket_reading_that_is_not_optunas_raises_instead_of_a_wrong_reason():
    """Should Optuna's assignment change, ctq's reading would rank a model among results Optuna
    did not compare: model 6 is in Optuna's bracket 1 (no rung at epoch 1, so it goes on), read
    here as bracket 0, where 0.9 is last of its rung."""
    hyperband = Hyperband(1, 3, 9, "min", seed=0)
    hyperband.decide(2, 1, 0.5)
    hyperband._ends = (17,)  # one bracket: every model read as bracket 0
    with pytest.raises(RuntimeError, match="HyperbandPruner promoted model 6 at epoch 1 against the rank it "
                                           "compared \\(rank 2 of 2 results of bracket 0"):
        hyperband.decide(6, 1, 0.9)


# ------------------------------------------------------------------------ on the real server
GRID = """
    name: {name}
    data: {{table: {table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
    segments: 2
    models:
      - name: a
        layers: [{{dense: 8, activation: relu}}]
      - name: b
        layers: [{{dense: 16, activation: tanh}}]
      - name: c
        layers: []
    search:
      method: asha
      seed: 3
      max_epochs: 3
      reduction_factor: 3
      space:
        learning_rate: [0.0001, 0.003, 0.05]
        batch_size: [16]  # hops long enough for the kill to land inside the first rung
    metric: val_accuracy
"""


def by_the_rule(decisions, mode="max", reduction_factor=3, bracket=lambda model_id: 0):
    """Each recorded decision as ASHA's rule makes it from the results recorded before it at its
    rung (in seq order) in its bracket (Hyperband's; ASHA has one), computed here without Optuna."""
    seen: dict[tuple[int, int], list[float]] = {}
    out = []
    for d in sorted(decisions, key=lambda d: d["seq"]):
        results = seen.setdefault((bracket(d["model_id"]), d["rung"]), [])
        results.append(d["value"])
        better = sum((v > d["value"]) if mode == "max" else (v < d["value"]) for v in results)
        out.append("promote" if better < max(1, len(results) // reduction_factor) else "stop")
    return out


async def run_decisions(conn, run_id):
    return [dict(r) for r in await conn.fetch(
        "SELECT model_id, rung, seq, epoch, value, decision, reason, decided_at FROM ctq.decisions "
        "WHERE run_id = $1 ORDER BY seq", run_id)]


async def check_stopped_never_train_again(conn, run_id, decisions, max_epochs, segments=2):
    """Each decision read the run's metric of its epoch; a model stopped after epoch e has hops of
    epochs 1..e only (one per segment), all started before the decision, and is 'stopped' with its
    epoch-e metrics and the search named in its message; every other model trained to max_epochs."""
    for d in decisions:
        assert d["value"] == await conn.fetchval(
            "SELECT val_metric FROM ctq.epochs WHERE run_id = $1 AND model_id = $2 AND epoch = $3",
            run_id, d["model_id"], d["epoch"] - 1)
    stops = {d["model_id"]: d for d in decisions if d["decision"] == "stop"}
    for model in await conn.fetch("SELECT model_id, status, epochs_done, val_metric, message FROM ctq.models "
                                  "WHERE run_id = $1", run_id):
        hops = await conn.fetch("SELECT epoch, started_at FROM ctq.hops WHERE run_id = $1 AND model_id = $2",
                                run_id, model["model_id"])
        stop = stops.get(model["model_id"])
        epochs = stop["epoch"] if stop else max_epochs
        assert sorted(h["epoch"] for h in hops) == sorted(list(range(epochs)) * segments)
        if stop:
            assert (model["status"], model["epochs_done"]) == ("stopped", epochs)
            assert model["val_metric"] == stop["value"]
            assert model["message"].startswith("stopped by ") and model["message"].endswith(stop["reason"])
            assert all(h["started_at"] < stop["decided_at"] for h in hops)  # never trained again
        else:
            assert (model["status"], model["epochs_done"]) == ("succeeded", max_epochs)
    await assert_consistent(conn, run_id, segments)


async def check_asha_record(conn, run_id):
    """The catalog tells one story: one decision per model at rung 0 (epoch 1), each the rule's;
    a stopped model has no hop after its decision and is 'stopped' with its epoch-1 metrics; a
    promoted one trained to max_epochs."""
    decisions = await run_decisions(conn, run_id)
    assert [d["seq"] for d in decisions] == list(range(9))
    assert sorted(d["model_id"] for d in decisions) == list(range(1, 10))
    assert {(d["rung"], d["epoch"]) for d in decisions} == {(0, 1)}
    assert [d["decision"] for d in decisions] == by_the_rule(decisions)
    await check_stopped_never_train_again(conn, run_id, decisions, max_epochs=3)
    return decisions


@pytest.fixture(scope="module")
async def asha_run(small_table, tmp_path_factory, dsn, ctq_home):
    """One ASHA run, killed with -9 in the middle of its rung and resumed (in process): the
    decisions recorded before the kill, and the resumed session's result."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    grid = write_grid(tmp_path_factory.mktemp("asha"), GRID.format(name="asha", table=small_table))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    run_id = None
    for _ in range(2400):
        await asyncio.sleep(0.05)
        if not await conn.fetchval("SELECT to_regclass('ctq.decisions') IS NOT NULL"):
            continue  # the subprocess has not installed ctq yet
        run_id = await conn.fetchval("SELECT max(run_id) FROM ctq.runs WHERE name = 'asha' AND status = 'running'")
        if run_id and await conn.fetchval("SELECT count(*) FROM ctq.decisions WHERE run_id = $1", run_id) >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, proc.stderr.read()
    await asyncio.sleep(1)  # let a hop in flight at the kill commit or die
    before = [dict(r) for r in await conn.fetch(
        "SELECT model_id, seq, value, decision FROM ctq.decisions WHERE run_id = $1 ORDER BY seq", run_id)]
    await conn.close()
    result = await api.resume(dsn, run_id)  # in process: no second interpreter start
    return before, result


@on_the_server
async def test_asha_stops_models_at_the_rung_and_the_best_reaches_max_epochs(asha_run, conn):
    _, result = asha_run
    assert result.status == "succeeded" and len(result.leaderboard) == 9
    decisions = await check_asha_record(conn, result.run_id)
    stopped = {d["model_id"] for d in decisions if d["decision"] == "stop"}
    assert stopped and len(stopped) < 9
    assert set(result.stopped_models) == stopped
    assert result.run_hops == 9 * 2 + (9 - len(stopped)) * 2 * 2  # epoch 1 for all, epochs 2-3 for the rest
    best = result.leaderboard[0]
    assert best["model_id"] not in stopped and best["epochs_done"] == 3
    board = {row["model_id"]: row for row in result.leaderboard}
    assert all(board[m]["status"] == "stopped" and board[m]["score"] is not None for m in stopped)
    assert all(board[m]["message"].startswith("stopped by ASHA after epoch 1: rank ") for m in stopped)


@on_the_server
async def test_simulate_refuses_to_replay_a_run_that_stopped_models_early(asha_run, run_cli):
    proc = run_cli("simulate", "--replay", str(asha_run[1].run_id))
    assert proc.returncode == 2 and "stopped" in proc.stderr and "early" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@on_the_server
async def test_report_lists_the_decisions_as_the_catalog_records_them(asha_run, conn):
    from test_report import Doc, close

    from ctq import report

    run_id = asha_run[1].run_id
    doc = Doc(report.render_html(await report.load(conn, run_id)))
    rows = [dict(r) for r in doc.tables["decisions"][1:]]
    recorded = await conn.fetch("SELECT seq, model_id, rung, epoch, value, decision FROM ctq.decisions "
                                "WHERE run_id = $1 ORDER BY seq", run_id)
    assert len(rows) == len(recorded) >= 9
    for row, d in zip(rows, recorded):
        assert (int(row["seq"]), int(row["model_id"]), int(row["rung"]), int(row["epoch"]), row["decision"]) == \
               (d["seq"], d["model_id"], d["rung"], d["epoch"], d["decision"])
        assert close(row["value"], d["value"])


@on_the_server
async def test_kill_9_mid_asha_resumes_to_the_same_decisions(asha_run, conn):
    before, result = asha_run
    assert 3 <= len(before) < 9  # killed in the middle of the rung
    decisions = await check_asha_record(conn, result.run_id)  # each one the rule's, in seq order
    # what was decided before the kill stands, and the resumed session went on from that state
    assert [{k: d[k] for k in ("model_id", "seq", "value", "decision")} for d in decisions[:len(before)]] == before


TWO_MODELS = """
data: {table: public.small, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}
segments: 2
models:
  - name: a
    layers: [{dense: 8, activation: relu}]
  - name: c
    layers: []
"""  # what the grids below share, after their name: two models on the small table, 2 segments

HYPERBAND_GRID = "name: hyperband" + TWO_MODELS + """
search: {method: hyperband, seed: 0, grace_period: 1, reduction_factor: 2, max_epochs: 3,
         space: {learning_rate: [0.0001, 0.0003, 0.05, 0.01], batch_size: [64]}}
metric: val_accuracy
"""


@on_the_server
async def test_hyperband_run_decides_per_bracket_and_stopped_models_never_train_again(small_table, dsn, conn):
    """reduction_factor 2, max_epochs 3: rungs after epochs 1 and 2; floor(log2(3)) + 1 = 2
    brackets, budgets 2 and 2 (of 4): with seed 0 the odd models are in bracket 0 (decided after
    epochs 1 and 2), the even ones in bracket 1 (decided after epoch 2 only). Every decision is the
    rule's within its bracket and names it; a resume's replay of the catalog gives the same
    decisions, and refuses a record that was changed."""
    cfg = parse_config(HYPERBAND_GRID, source_path="<hyperband>")
    hyperband = Hyperband(1, 2, 3, "max", seed=0)
    assert [hyperband.bracket(m.model_id) for m in cfg.models] == [0, 1] * 4
    result = await api.train(cfg, dsn)
    assert result.status == "succeeded" and len(result.leaderboard) == 8
    decisions = await run_decisions(conn, result.run_id)
    assert [d["seq"] for d in decisions] == list(range(len(decisions)))
    for d in decisions:
        bracket = hyperband.bracket(d["model_id"])
        assert d["epoch"] == 2 ** d["rung"] and d["rung"] >= bracket  # never before its bracket's first rung
        assert f" results of bracket {bracket} at rung {d['rung']} (epoch {d['epoch']})" in d["reason"]
    decided = {(d["model_id"], d["epoch"]) for d in decisions}
    promoted_at_1 = {d["model_id"] for d in decisions if d["epoch"] == 1 and d["decision"] == "promote"}
    assert decided == {(m, 1) for m in (1, 3, 5, 7)} | {(m, 2) for m in (2, 4, 6, 8) + tuple(promoted_at_1)}
    assert {d["epoch"] for d in decisions if d["model_id"] % 2 == 0} == {2}
    assert [d["decision"] for d in decisions] == by_the_rule(decisions, "max", 2, hyperband.bracket)
    stopped = {d["model_id"] for d in decisions if d["decision"] == "stop"}
    assert stopped and set(result.stopped_models) == stopped
    await check_stopped_never_train_again(conn, result.run_id, decisions, max_epochs=3)
    assert all(m.startswith("after epoch ") and " of bracket " in m for m in result.stopped_models.values())
    assert (await conn.fetchval("SELECT message FROM ctq.models WHERE run_id = $1 AND model_id = $2",
                                result.run_id, min(stopped))).startswith("stopped by Hyperband after epoch ")

    plan = await api.load_plan(conn, result.run_id)  # what a resume rebuilds the search from
    assert len(plan.decisions) == len(decisions)
    replayed = api.restore_search(plan)
    for d in decisions:  # the state is the run's: every result is already decided
        with pytest.raises(ValueError, match="already has a result"):
            replayed.decide(d["model_id"], d["epoch"], d["value"])
    flipped = dataclasses.replace(plan.decisions[-1], promoted=not plan.decisions[-1].promoted)
    with pytest.raises(RunFailed, match=f"run {result.run_id}: recorded decision on model "
                                        f"{flipped.model_id} at epoch {flipped.epoch} .* is not what Hyperband"):
        api.restore_search(dataclasses.replace(plan, decisions=plan.decisions[:-1] + (flipped,)))


# ------------------------------------------------------------------------------------ TPE
TPE_GRID = "name: tpe" + TWO_MODELS + """search:
  method: tpe
  seed: 4
  samples: 6
  space:                      # one batch shape per architecture: no compile inside the schedule
    learning_rate: {low: 0.0001, high: 0.1, log: true}
    batch_size: [64]
epochs: 1
metric: val_accuracy
"""


def point_of(row, archs):
    h = json.loads(row["hyperparameters"])
    return (archs.index(json.loads(row["architecture"])), h["optimizer"], h["learning_rate"], h["batch_size"],
            h["momentum"])


def optuna_ask(number: int, told: list[tuple[dict, float | None]]) -> tuple:
    """Ask ``number`` (0-based) of TPE_GRID's search, of Optuna's TPESampler driven directly: a
    study of the results ``told`` so far (parameters, value or None for a failed model), a sampler
    seeded 4 * 1_000_003 + number (search.seed 4), the parameters suggested in ctq's order. Written
    from the grid file, not from ctq's space or its Tpe."""
    import optuna

    dists = {"architecture": optuna.distributions.CategoricalDistribution([0, 1]),
             "optimizer": optuna.distributions.CategoricalDistribution(["adam"]),
             "learning_rate": optuna.distributions.FloatDistribution(0.0001, 0.1, log=True),
             "batch_size": optuna.distributions.CategoricalDistribution([64])}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=4 * 1_000_003 + number))
    for params, value in told:
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, value=value,
            state=optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL))
    trial = study.ask()
    return (trial.suggest_categorical("architecture", [0, 1]), trial.suggest_categorical("optimizer", ["adam"]),
            trial.suggest_float("learning_rate", 0.0001, 0.1, log=True), trial.suggest_categorical("batch_size", [64]),
            None)


async def replay_tpe(conn, run_id, cfg):
    """Ask Optuna's TPE again from the catalog alone: 2 configurations at the start (one per
    segment), then one each time a model finished, told its result (val_accuracy) in finishing
    order, until 6 are asked. Returns the asks."""
    archs = [a.spec for a in cfg.architectures]
    asks = [optuna_ask(n, []) for n in range(2)]
    told = []
    finished = await conn.fetch("SELECT model_id, hyperparameters::text AS hyperparameters, architecture::text "
                                "AS architecture, val_metric FROM ctq.models WHERE run_id = $1 "
                                "ORDER BY updated_at, model_id", run_id)
    for row in finished:
        arch, opt, lr, bs, _ = point_of(row, archs)
        told.append(({"architecture": arch, "optimizer": opt, "learning_rate": lr, "batch_size": bs},
                     row["val_metric"]))
        if len(asks) < 6:
            asks.append(optuna_ask(len(asks), told))
    return asks


@on_the_server
async def test_tpe_asks_as_slots_free_up_informed_by_finished_ones_and_resumes_the_same(small_table, dsn, conn):
    cfg = parse_config(TPE_GRID, source_path="<tpe>")
    assert cfg.models == ()  # nothing is known before the run asks
    result = await api.train(cfg, dsn)
    run_id = result.run_id
    assert result.status == "succeeded" and len(result.leaderboard) == 6 and result.hops == 6 * 2
    rows = await conn.fetch("SELECT model_id, hyperparameters::text AS hyperparameters, architecture::text AS "
                            "architecture FROM ctq.models WHERE run_id = $1 ORDER BY model_id", run_id)
    archs = [a.spec for a in cfg.architectures]
    asked = [point_of(r, archs) for r in rows]
    assert asked == await replay_tpe(conn, run_id, cfg)
    # never more than 2 models (one per segment) between their first hop and their last
    spans = await conn.fetch("SELECT model_id, min(started_at) AS a, max(finished_at) AS b FROM ctq.hops "
                             "WHERE run_id = $1 GROUP BY model_id", run_id)
    for s in spans:
        assert sum(t["a"] <= s["a"] < t["b"] for t in spans) <= 2

    # as if the coordinator had died after the 5th model finished, before asking for the 6th
    await conn.execute("DELETE FROM ctq.models WHERE run_id = $1 AND model_id = 6", run_id)
    await conn.execute("UPDATE ctq.runs SET status = 'interrupted' WHERE run_id = $1", run_id)
    resumed = await api.resume(dsn, run_id)
    assert resumed.status == "succeeded" and resumed.hops == 2
    again = await conn.fetchrow("SELECT hyperparameters::text AS hyperparameters, architecture::text AS "
                                "architecture FROM ctq.models WHERE run_id = $1 AND model_id = 6", run_id)
    assert point_of(again, archs) == asked[5]  # the same configuration as without the crash
    # a replay would have every model from the start: a schedule no TPE run has (a user trial)
    with pytest.raises(UsageError, match=rf"--replay {run_id}: its search \(tpe\) asked for its models during "
                                         "the run"):
        await api.measured_run(dsn, run_id)


@on_the_server
async def test_a_replay_of_a_run_that_stopped_models_early_is_refused(asha_run, dsn):
    with pytest.raises(UsageError, match=rf"--replay {asha_run[1].run_id}: its search stopped \d+ models early"):
        await api.measured_run(dsn, asha_run[1].run_id)


async def test_reproducible_is_refused_with_a_search_that_stops_models_on_timing(small_table, tmp_path, run_cli,
                                                                                   conn):
    """An ASHA or Hyperband stop follows the order in which models reach a rung, which timing
    sets: under --reproducible (mop-fixed) re-runs stopped other models (86, 80, 66 hops: a user
    trial). Refused, exit 2, before anything is written."""
    async def runs():
        if await conn.fetchval("SELECT to_regclass('ctq.runs')") is None:
            return None
        return await conn.fetchval("SELECT count(*) FROM ctq.runs")

    before = await runs()
    for method in ("asha", "hyperband"):
        grid = write_grid(tmp_path, GRID.format(name="fixed", table=small_table).replace("method: asha",
                                                                                          f"method: {method}"))
        proc = run_cli("train", str(grid), "--reproducible", "--json")
        assert proc.returncode == 2, proc.stderr
        error = json.loads(proc.stdout)["error"]
        assert f"search.method {method} stops models on results in the order they arrive" in error, error
    assert await runs() == before


# ------------------------------------------------------------------------------ warm_start
WARM_GRID = "name: warm" + TWO_MODELS + """search:
  seed: 3  # the ASHA run's: the same validation rows (api.warm_start_split)
  space: {optimizer: [sgd], learning_rate: [0.000000001], batch_size: [64]}
epochs: 1
warm_start: RUN
"""


async def first_array(conn, run_id: int, model_id: int):
    return (await stored_state(conn, run_id, model_id))[0]  # the first layer's kernel


@on_the_server
async def test_warm_start_takes_the_weights_of_the_best_model_of_each_architecture(asha_run, dsn, conn):
    """The ASHA run trained with adam; here sgd with a learning rate of 1e-9: every model ends with
    the weights of the best trained model of its architecture there (it barely moves them), and
    trains at all only because its optimizer started afresh (adam's slots would not fit sgd)."""
    source = asha_run[1].run_id
    cfg = parse_config(WARM_GRID.replace("RUN", str(source)), source_path="<warm>")
    result = await api.train(cfg, dsn)
    assert result.status == "succeeded"
    best = {}
    for row in asha_run[1].leaderboard:
        arch = row["name"].split("/")[0]
        if arch not in best:
            best[arch] = row["model_id"]
    for model in await conn.fetch("SELECT model_id, name FROM ctq.models WHERE run_id = $1", result.run_id):
        arch = model["name"].split("/")[0]
        start = await first_array(conn, source, best[arch])
        assert await first_array(conn, result.run_id, model["model_id"]) == pytest.approx(start, abs=1e-5)


@on_the_server
async def test_warm_start_from_no_run_or_a_run_without_the_architecture_is_refused(asha_run, dsn, conn):
    runs = await conn.fetchval("SELECT count(*) FROM ctq.runs")
    with pytest.raises(ConfigError, match=r"<warm>:warm_start: no run 999999 to start from"):
        await api.train(parse_config(WARM_GRID.replace("RUN", "999999"), source_path="<warm>"), dsn)
    other = WARM_GRID.replace("RUN", str(asha_run[1].run_id)).replace("layers: []", "layers: [{dense: 3}]")
    with pytest.raises(ConfigError, match="has no trained model of architecture 'c'"):
        await api.train(parse_config(other, source_path="<warm>"), dsn)
    # the same layers on other data have weights of other shapes (the run failed at its first hop)
    narrower = WARM_GRID.replace("RUN", str(asha_run[1].run_id)).replace(", f8]", "]")
    with pytest.raises(ConfigError, match=r"<warm>:warm_start: run \d+'s models take inputs of shape \[8\], "
                                          r"3 outputs; public.small gives inputs of shape \[7\], 3 outputs"):
        await api.train(parse_config(narrower, source_path="<warm>"), dsn)
    assert await conn.fetchval("SELECT count(*) FROM ctq.runs") == runs  # nothing written


@on_the_server
async def test_a_warm_start_that_would_validate_on_its_weights_training_rows_is_refused(asha_run, dsn, conn,
                                                                                        tmp_path, run_cli):
    """A row's split follows from search.seed and the validation fraction: another seed (a user
    trial: 979 of 1241 validation rows had trained the starting weights, val_mae 6 % optimistic)
    or a larger fraction on the same table validates on rows the weights trained on. Refused,
    naming the settings that keep them apart; a smaller fraction keeps them apart and trains. On
    another table ctq cannot tell which rows the two share: it says so."""
    runs = await conn.fetchval("SELECT count(*) FROM ctq.runs")
    grid = WARM_GRID.replace("RUN", str(asha_run[1].run_id))
    other_seed = grid.replace("seed: 3", "seed: 0")
    larger = grid.replace("task: classification}", "task: classification, validation_fraction: 0.3}")
    for changed, why, seen in ((other_seed, "search.seed 0 here, 3 there", "80%"),
                               (larger, "validation_fraction 0.3 here, 0.2 there", "33%")):
        path = write_grid(tmp_path, changed)
        proc = run_cli("train", str(path))
        assert proc.returncode == 2, proc.stderr
        assert (f"grid.yaml:warm_start: run {asha_run[1].run_id} trained on public.small split otherwise ({why}): "
                f"about {seen} of this run's validation rows would be rows its models trained on") in proc.stderr, \
            proc.stderr
        assert "use search.seed: 3 and a validation_fraction of at most 0.2" in proc.stderr
    assert await conn.fetchval("SELECT count(*) FROM ctq.runs") == runs  # nothing written
    smaller = grid.replace("task: classification}", "task: classification, validation_fraction: 0.1}")
    assert (await api.train(parse_config(smaller, source_path="<warm>"), dsn)).status == "succeeded"
    await conn.execute("DROP TABLE IF EXISTS public.small_copy; CREATE TABLE public.small_copy AS "
                       "SELECT * FROM public.small")
    notes = []
    copied = grid.replace("table: public.small,", "table: public.small_copy,")
    assert (await api.train(parse_config(copied, source_path="<warm>"), dsn, notify=notes.append)).status == "succeeded"
    assert any(f"warm_start: run {asha_run[1].run_id} trained on public.small; any of its training rows that "
               "public.small_copy holds too may be validation rows here" in n for n in notes), notes
    await conn.execute("DROP TABLE public.small_copy")


# ------------------------------------------------------------------- the run's metric, one rule
COLUMN_OF = {"val_loss": "val_loss", "loss": "train_loss",  # by hand: where each metric name lives
             **{f"val_{k}": "val_metric" for k in ("accuracy", "auc", "f1", "precision", "recall", "mae")},
             **{k: "train_metric" for k in ("accuracy", "auc", "f1", "precision", "recall", "mae")}}


@pytest.mark.parametrize("name", METRICS)
def test_every_accepted_metric_name_maps_to_its_column_direction_and_compiled_metric(name):
    """Every name config.py accepts: the catalog column holding it, max for the classification
    metrics, and the metric the hops compile."""
    metric = Metric(name)
    assert metric.column == COLUMN_OF[name]
    assert metric.mode == ("min" if name.removeprefix("val_") in ("loss", "mae") else "max")
    row = {"train_loss": 1.0, "train_metric": 2.0, "val_loss": 3.0, "val_metric": 4.0}
    assert metric.value(row) == row[COLUMN_OF[name]]
    tasks = ("regression",) if "mae" in name else ("classification",) if metric.mode == "max" else TASKS
    for task in tasks:
        cfg = parse_config("name: m" + TWO_MODELS.replace("classification", task) + f"epochs: 1\nmetric: {name}\n",
                           source_path="<metric>")
        assert cfg.metric_mode == metric.mode
        # what the hops compute (the coordinator sends the kind; client and server follow
        # ctq.rules.compiled_metric) is what Metric says is in train_/val_metric
        assert metric.compiled(task) == (metric.kind if metric.kind in ("auc", "f1", "precision", "recall")
                                         else "accuracy" if task == "classification" else "mae")
    with pytest.raises(ValueError, match="unknown metric 'val_acc'"):
        Metric("val_acc")


AUC_GRID = """
    name: asha-auc
    data: {{table: {table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification}}
    segments: 2
    models:
      - name: a
        layers: [{{dense: 8, activation: relu}}]
      - name: c
        layers: []
    search:
      method: asha
      seed: 1
      max_epochs: 2
      reduction_factor: 2
      space:
        learning_rate: [0.0003, 0.03]
        batch_size: [128]
    metric: val_auc
"""


@pytest.fixture(scope="module")
async def auc_run(small_table, tmp_path_factory, dsn, ctq_home):
    """An ASHA run ranked on val_auc, through the CLI: its run id."""
    grid = write_grid(tmp_path_factory.mktemp("auc"), AUC_GRID.format(table=small_table))
    proc = start_train(dsn, ctq_home, str(grid), "--json")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out)["run_id"]


@on_the_server
async def test_asha_on_val_auc_decides_on_the_validation_auc_the_leaderboard_ranks(auc_run, conn):
    """Each decision's value is its model's val_metric (validation AUC) of that epoch, not the
    training AUC: ASHA stops models on the number the run is ranked by."""
    decisions = await run_decisions(conn, auc_run)
    assert len(decisions) == 4 and {(d["rung"], d["epoch"]) for d in decisions} == {(0, 1)}
    for d in decisions:
        epoch = await conn.fetchrow("SELECT train_metric, val_metric FROM ctq.epochs WHERE run_id = $1 AND "
                                    "model_id = $2 AND epoch = 0", auc_run, d["model_id"])
        assert d["value"] == epoch["val_metric"] != epoch["train_metric"]
    assert [d["decision"] for d in decisions] == by_the_rule(decisions, "max", reduction_factor=2)
    await check_stopped_never_train_again(conn, auc_run, decisions, max_epochs=2)


@on_the_server
async def test_the_leaderboard_view_scores_every_metric_name_from_the_column_metric_names(auc_run, conn):
    """The SQL view (install.sql) and ctq.metrics agree for every accepted name: the run is
    relabelled in a transaction that is rolled back."""
    models = {r["model_id"]: r for r in await conn.fetch(
        "SELECT model_id, train_loss, train_metric, val_loss, val_metric FROM ctq.models WHERE run_id = $1", auc_run)}
    assert all(len({m[c] for c in COLUMN_OF.values()}) == 4 for m in models.values())  # tells them apart
    tx = conn.transaction()
    await tx.start()
    try:
        for name in METRICS:
            await conn.execute("UPDATE ctq.runs SET metric = $2, metric_mode = $3 WHERE run_id = $1",
                               auc_run, name, Metric(name).mode)
            for row in await conn.fetch("SELECT model_id, score FROM ctq.leaderboard WHERE run_id = $1", auc_run):
                assert row["score"] == Metric(name).value(models[row["model_id"]]), name
    finally:
        await tx.rollback()


@on_the_server
async def test_report_labels_the_metric_columns_by_the_metric_the_run_computes(auc_run, conn):
    from test_report import Doc

    from ctq import report

    doc = Doc(report.render_html(await report.load(conn, auc_run)))
    header = [text for _, text in doc.tables["leaderboard"][0]]
    # the run's metric (val_auc) is the score's column, shown once; nothing says accuracy
    assert "train auc" in header and "val_auc" in header and "val auc" not in header
    assert not any("accuracy" in h for h in header)

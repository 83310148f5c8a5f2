"""Scheduling and search figures (issue 12), each a ratio of measurements taken side by side:

* cost-aware vs random MOP: the same heterogeneous short-hop grid trained under both rules
  (makespan of the hop schedule), and both rules simulated on synthetic grids across seeds (with
  and without the warm-up's estimates, and on broader random grids);
* the warm-up's estimated hop of each model against its measured steady-state hops;
* the cost-aware run's segment utilization and makespan against the lower bound
  max(total work / segments, longest model's total work) from its measured steady-state hops;
* ASHA and Hyperband against the full grid of the same space: total hops, wall time and best metric.

    python bench/search.py          (part of `make bench`; needs a table: it loads its own)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))

from ctq import api, simulate  # noqa: E402
from ctq.config import parse_config  # noqa: E402

ROWS = 80_000  # the short hops: about 0.1 s for the fast models on 2 segments
SEEDS = 100

HETERO = """
name: {name}
data: {{table: public.search_bench, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
        task: classification, validation_fraction: 0.1}}
segments: 2
models:
  - {{name: mlp, layers: [{{dense: 32}}, {{dense: 32}}]}}
search:
  seed: 1
  space:
    learning_rate: [0.001, 0.002, 0.005, 0.01]
    batch_size: [512, 32]
epochs: 2
metric: val_accuracy
"""

SPACE = """
name: {name}
data: {{table: public.search_bench, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
        task: classification, validation_fraction: 0.1}}
segments: 2
models:
  - {{name: small, layers: [{{dense: 16}}]}}
  - {{name: deep, layers: [{{dense: 64}}, {{dense: 64}}]}}
  - {{name: linear, layers: []}}
search:
  {search}
  seed: 2
  space:
    learning_rate: [0.00003, 0.001, 0.03]
    batch_size: [256]
{epochs}
metric: val_accuracy
"""


def config(text: str):
    return parse_config(text, source_path="<bench>", base_dir=str(REPO / "examples"))


async def load_table(dsn: str) -> None:
    import asyncpg
    from make_data import make

    x, y = make(ROWS, 5)
    conn = await asyncpg.connect(dsn)
    cols = ", ".join(f"f{i} float8" for i in range(1, 9))
    await conn.execute(f"DROP TABLE IF EXISTS public.search_bench; CREATE TABLE public.search_bench ({cols}, label int)")
    await conn.copy_records_to_table("search_bench", records=[tuple(map(float, r)) + (int(l),) for r, l in zip(x, y)])
    await conn.close()


def lower_bound(result) -> tuple[float, float]:
    """max(total work / segments, the longest model's total work), from the run's steady-state
    hops: each model's median hop (its first hops may carry one-off costs) times its hop count."""
    per_model: dict[int, list[float]] = {}
    for h in result.hop_results:
        per_model.setdefault(h.hop.model_id, []).append(h.wall_seconds)
    work = {m: float(np.median(v)) * len(v) for m, v in per_model.items()}
    segments = max(h.hop.segment for h in result.hop_results) + 1
    return max(sum(work.values()) / segments, max(work.values())), sum(work.values()) / segments


def simulated_gains(seeds: int = SEEDS, warmup_estimates: bool = True) -> tuple[list[float], list[float]]:
    """Random / cost-aware simulated makespan on synthetic heterogeneous grids (Cerebro-DS model,
    p = 0.8, L = 8), across seeds: small grids where the tail matters, and the issue's shape."""
    gains, tails = [], []
    for seed in range(seeds):
        for models, segments, epochs in ((10, 2, 2), (12, 2, 3), (20, 8, 1), (48, 4, 1), (48, 8, 2)):
            d = simulate.heterogeneous_durations(models, segments, 0.8, 8.0, seed)
            c = simulate.compare(d, segments, epochs, seed, warmup_estimates=warmup_estimates)
            gains.append(c.cost_gain)
            tails.append(c.mop.makespan / c.mop.lower_bound)
    return gains, tails


def broad_gains(grids: int = 300) -> list[float]:
    """The same ratio on random grid shapes: 3-59 models, 2-11 segments, 1-3 epochs, a share of
    fast models in [0.3, 0.95] and a slow/fast ratio in [1.5, 12]; every other grid on segments of
    unequal speed (0.7-1.3x)."""
    rng, gains = np.random.default_rng(7), []
    for seed in range(grids):
        models, segments, epochs = int(rng.integers(3, 60)), int(rng.integers(2, 12)), int(rng.integers(1, 4))
        p, ratio = float(rng.uniform(0.3, 0.95)), float(rng.uniform(1.5, 12))
        speed = rng.uniform(0.7, 1.3, segments) if seed % 2 else None
        d = simulate.heterogeneous_durations(models, segments, p, ratio, seed, segment_speed=speed)
        gains.append(simulate.compare(d, segments, epochs, seed).cost_gain)
    return gains


def never_worse(gains: list[float]) -> str:
    return (f"min {min(gains):.3f}, max {max(gains):.3f}, never worse in "
            f"{sum(g >= 1 - 1e-12 for g in gains)}/{len(gains)}")


async def search_figures(dsn: str) -> list[tuple[str, float, str, str]]:
    await load_table(dsn)
    results = []

    # 1. cost-aware vs random MOP on one heterogeneous short-hop grid (6 fast, 2 slow models)
    cfg = config(HETERO.format(name="sched"))
    slow = [m.model_id for m in cfg.models if m.batch_size == 32][:2]
    cfg = dataclasses.replace(cfg, models=tuple(m for m in cfg.models if m.batch_size == 512 or m.model_id in slow))
    # in the order cost, random, random, cost, so that a drift in the machine's load hits both alike
    runs = {"cost": [], "random": []}
    for i, rule in enumerate(("cost", "random", "random", "cost")):
        runs[rule].append(await api.train(cfg, dsn, name=f"sched-{rule}-{i}", scheduling=rule))
    seconds = {rule: float(np.mean([r.schedule_seconds for r in rs])) for rule, rs in runs.items()}
    cost, rand = runs["cost"][0], runs["random"][0]
    results.append(("MOP random / cost-aware makespan, measured (hop schedule, 2 runs each)",
                    seconds["random"] / seconds["cost"], ">= 1.0",
                    f"{seconds['random']:.2f}s / {seconds['cost']:.2f}s (runs: "
                    f"{', '.join(f'{r.schedule_seconds:.2f}' for r in runs['random'])} / "
                    f"{', '.join(f'{r.schedule_seconds:.2f}' for r in runs['cost'])}), {len(cfg.models)} models "
                    f"(2 slow) x 2 segments x 2 epochs"))
    bound, _ = lower_bound(cost)
    results.append(("cost-aware MOP makespan / lower bound (measured steady-state hops)",
                    cost.schedule_seconds / bound, "<= 1.05",
                    f"{cost.schedule_seconds:.2f}s vs max(work / segments, longest model) = {bound:.2f}s"))
    results.append(("cost-aware MOP segment utilization (hop schedule)", cost.utilization, ">= 0.95",
                    f"random rule: {rand.utilization:.3f}; second runs: {runs['cost'][1].utilization:.3f} vs "
                    f"{runs['random'][1].utilization:.3f}"))
    measured = [(h.hop.model_id, h.hop.segment, h.wall_seconds) for h in cost.hop_results]
    replay = simulate.replay(measured, [2], epochs=cfg.epochs)[2]
    results.append(("simulated / measured cost-aware MOP makespan (hop schedule)",
                    replay.mop.makespan / cost.schedule_seconds, "0.90-1.10",
                    f"{replay.mop.makespan:.2f}s vs {cost.schedule_seconds:.2f}s"))
    steady = {}
    for h in cost.hop_results:
        steady.setdefault(h.hop.model_id, []).append(h.wall_seconds)
    ratios = {m: float(np.median(steady[m])) / e for m, e in cost.expected_hop_seconds.items() if m in steady}
    order = sorted(ratios, key=lambda m: cost.expected_hop_seconds[m])
    ranked = all(np.median(steady[a]) <= np.median(steady[b]) for a, b in zip(order, order[1:])
                 if cost.expected_hop_seconds[b] > 2 * cost.expected_hop_seconds[a])
    results.append(("measured steady-state hop / warm-up's estimate, median over models",
                    float(np.median(list(ratios.values()))), "(calibration)",
                    f"per model {min(ratios.values()):.2f}-{max(ratios.values()):.2f}; models estimated over 2x "
                    f"slower are slower: {ranked}"))
    first_hops = []  # each model's first hop on each segment, over its steady hop: a compile shows here
    seen = set()
    for h in sorted(cost.hop_results, key=lambda h: (h.hop.epoch, h.hop.model_id)):
        if (h.hop.model_id, h.hop.segment) not in seen:
            seen.add((h.hop.model_id, h.hop.segment))
            first_hops.append(h.wall_seconds / float(np.median(steady[h.hop.model_id])))
    results.append(("first hop of a model on a segment / its steady-state hop, median", float(np.median(first_hops)),
                    "~1 (no compile in the schedule)",
                    f"max {max(first_hops):.2f} over {len(first_hops)} first hops (the warm-up compiled every "
                    "architecture x optimizer x batch on every segment)"))
    gains, tails = simulated_gains()
    results.append((f"MOP random / cost-aware makespan, simulated, mean of {len(gains)} grids", float(np.mean(gains)),
                    ">= 1.0, never worse", f"{never_worse(gains)}; cost-aware makespan / lower bound: "
                    f"mean {np.mean(tails):.4f}, max {max(tails):.3f}"))
    blind, blind_tails = simulated_gains(warmup_estimates=False)
    results.append(("  the same without the warm-up's estimates (learning from completed hops only)",
                    float(np.mean(blind)), "(comparison)", f"{never_worse(blind)}; makespan / lower bound: "
                    f"mean {np.mean(blind_tails):.4f}"))
    broad = broad_gains()
    results.append((f"  the same on {len(broad)} random grid shapes (segments of unequal speed in half)",
                    float(np.mean(broad)), "(comparison)", never_worse(broad)))

    # 2. ASHA vs the full grid of the same space (9 models, up to 9 epochs)
    grid = await api.train(config(SPACE.format(name="full-grid", search="method: grid", epochs="epochs: 9")), dsn)
    asha = await api.train(config(SPACE.format(name="asha", search="method: asha\n  max_epochs: 9\n"
                                               "  reduction_factor: 3", epochs="")), dsn)
    results.append(("ASHA / full grid: total hops", asha.hops / grid.hops, "(the saving)",
                    f"{asha.hops} vs {grid.hops} hops; wall {asha.schedule_seconds:.1f}s vs {grid.schedule_seconds:.1f}s "
                    "of hop schedule"))
    results.append(("ASHA / full grid: best val_accuracy", asha.best_metric / grid.best_metric, "~1.0",
                    f"{asha.best_metric:.4f} ({asha.best_model}) vs {grid.best_metric:.4f} ({grid.best_model})"))
    hyperband = await api.train(config(SPACE.format(name="hyperband", search="method: hyperband\n  max_epochs: 9\n"
                                                    "  reduction_factor: 3", epochs="")), dsn)
    results.append(("Hyperband / full grid: total hops", hyperband.hops / grid.hops, "(the saving)",
                    f"{hyperband.hops} vs {grid.hops} hops; best val_accuracy {hyperband.best_metric:.4f} "
                    f"({hyperband.best_model}), ratio {hyperband.best_metric / grid.best_metric:.3f}"))
    return results


if __name__ == "__main__":
    from alone import run_alone

    run_alone("ctq-bench-search-", search_figures)

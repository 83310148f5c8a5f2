"""ctq benchmarks: every figure is a ratio measured side by side in one run (`make bench`).

Writes bench/RESULTS.md (each figure, its target, the machine) and bench/speedup.png. Runs on a
throwaway embedded PostgreSQL; about 30 minutes on 2 cores (4 of them packing 2M and 20M x 32,
about 8 GB of disk; 5 training a 2 GB state, about 12 GB of memory). With CTQ_BENCH_GREENPLUM_DSN (a
superuser's DSN of a Greenplum database where ctq is installed), Greenplum's figures beside this
PostgreSQL's too (bench/greenplum.py, ~5 minutes more). Not a test: nothing here asserts.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))
from make_data import make  # noqa: E402

from ctq import api, simulate  # noqa: E402
from ctq.config import parse_config  # noqa: E402
from ctq.embedded import EmbeddedCluster  # noqa: E402

OUT = REPO / "bench"
ROWS = 200000  # hops long enough that one jit compile per model and backend does not dominate
PAPER_POINTS = {2: 1.53, 4: 2.21, 6: 2.43, 8: 2.73}  # Cerebro-DS, heterogeneous grid, CTQ vs UDAF


def grid(name: str, models: str, space: str, segments: int = 2, epochs: int = 1, cores: int | None = None) -> str:
    return f"""
name: {name}
{f"cores_per_segment: {cores}" if cores else ""}
data: {{table: public.bench, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
        task: classification, validation_fraction: 0.1}}
segments: {segments}
models:
{models}
search:
  seed: 1
  space:
{space}
epochs: {epochs}
metric: val_accuracy
"""


def config(text: str):
    return parse_config(text, source_path="<bench>", base_dir=str(REPO / "examples"))


async def load_table(dsn: str) -> None:
    import asyncpg

    x, y = make(ROWS, 7)
    conn = await asyncpg.connect(dsn)
    cols = ", ".join(f"f{i} float8" for i in range(1, 9))
    await conn.execute(f"DROP TABLE IF EXISTS public.bench; CREATE TABLE public.bench ({cols}, label int)")
    await conn.copy_records_to_table("bench", records=[tuple(map(float, r)) + (int(l),) for r, l in zip(x, y)])
    await conn.close()


def standalone_rows_per_second(units: int, batch: int, rows: int, repeats: int) -> float:
    """The same Keras model trained in a plain process on numpy arrays, pinned to one core."""
    code = f"""
import os, time, json
os.sched_setaffinity(0, {{0}})
os.environ['KERAS_BACKEND'] = 'jax'
import numpy as np, keras
rng = np.random.default_rng(0)
x = rng.normal(size=({rows}, 8)).astype('float32'); y = rng.integers(0, 3, {rows}).astype('int32')
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense({units}, activation='relu'),
                      keras.layers.Dense({units}, activation='relu'), keras.layers.Dense(3, activation='softmax')])
m.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
m.fit(x, y, batch_size={batch}, epochs=1, shuffle=False, verbose=0)
t = time.perf_counter()
for _ in range({repeats}):
    m.fit(x, y, batch_size={batch}, epochs=1, shuffle=False, verbose=0)
print(json.dumps({rows} * {repeats} / (time.perf_counter() - t)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def standalone_pair_scaling(rows: int) -> float:
    """Throughput of two plain Keras processes at once (one core each) over one alone."""
    code = f"""
import os, sys, time
os.sched_setaffinity(0, {{int(sys.argv[1])}})
os.environ['KERAS_BACKEND'] = 'jax'
import numpy as np, keras
rng = np.random.default_rng(0)
x = rng.normal(size=({rows}, 8)).astype('float32'); y = rng.integers(0, 3, {rows}).astype('int32')
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation='relu'),
                      keras.layers.Dense(64, activation='relu'), keras.layers.Dense(3, activation='softmax')])
m.compile(optimizer='adam', loss='sparse_categorical_crossentropy')
m.fit(x, y, batch_size=256, epochs=1, shuffle=False, verbose=0)
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
t = time.perf_counter()
for _ in range(6):
    m.fit(x, y, batch_size=256, epochs=1, shuffle=False, verbose=0)
print({rows} * 6 / (time.perf_counter() - t))
"""

    def run(n: int) -> float:
        start = time.time() + 15  # both processes start training at the same moment
        procs = [subprocess.Popen([sys.executable, "-c", code, str(i), str(start)], stdout=subprocess.PIPE,
                                  text=True) for i in range(n)]
        return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)

    return run(2) / run(1)


async def fixed_order_cost(dsn: str, cfg, mop) -> tuple[str, float, str, str]:
    """The price of reproducible weights: the same grid under mop-fixed (every model's segment order
    fixed by the seed) against the plain MOP run ``mop`` of it, measured back to back."""
    fixed = await api.train(cfg, dsn, name=f"{cfg.name}-mop-fixed", schedule="mop-fixed")
    return ("reproducible (mop-fixed) / MOP wall time, same grid", fixed.schedule_seconds / mop.schedule_seconds,
            "(the price)", f"{fixed.schedule_seconds:.1f}s / {mop.schedule_seconds:.1f}s of hop schedule, "
            f"utilization {fixed.utilization:.2f} vs {mop.utilization:.2f}")


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="ctq-bench-", dir="/tmp"))
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home)
    dsn = cluster.start()
    results: list[tuple[str, float, str, str]] = []
    try:
        await load_table(dsn)
        t_all = time.perf_counter()

        # 1. throughput: in-database (one segment = one core) vs standalone Keras on one core
        heavy = grid("throughput", "  - {name: heavy, layers: [{dense: 256}, {dense: 256}]}",
                     "    batch_size: [256]", segments=1, epochs=4, cores=1)
        r = await api.train(config(heavy), dsn)
        hops = r.hop_results[1:]  # the first hop pays the jit compile; standalone excludes it too
        in_db = sum(h.rows for h in hops) / sum(h.wall_seconds for h in hops)
        rows_per_hop = hops[0].rows
        alone = standalone_rows_per_second(256, 256, rows_per_hop, repeats=3)
        results.append(("in-database / standalone training throughput", in_db / alone, ">= 0.95",
                        f"{in_db:,.0f} vs {alone:,.0f} rows/s, 256-256 MLP, batch 256, one core each"))

        # 2-5. heterogeneous grid (p = 0.8, L ~ 8 via batch 256 vs 32) and homogeneous grid, MOP vs BSP
        models = ("  - {name: mlp-a, layers: [{dense: 64}, {dense: 64}]}\n"
                  "  - {name: mlp-b, layers: [{dense: 64}, {dense: 64}]}")
        hetero_space = ("    optimizer: [adam, sgd]\n"
                        "    learning_rate: [0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05]\n"
                        "    batch_size: [256, 16]")
        hetero = grid("hetero", models, hetero_space, epochs=2)
        # keep 32 fast (batch 256) and 8 slow (batch 16: 16x the steps) models: p = 0.8 exactly
        cfg = config(hetero)
        slow_ids = [m.model_id for m in cfg.models if m.batch_size == 16][:8]
        fast_ids = [m.model_id for m in cfg.models if m.batch_size == 256][:32]
        keep = set(slow_ids + fast_ids)
        import dataclasses

        cfg = dataclasses.replace(cfg, models=tuple(m for m in cfg.models if m.model_id in keep))
        # the grid's pack and compiled steps made before either run is timed: a grid's first run on
        # a server packs its source and compiles every step, which only the wall time of the run
        # that came first would carry (measured: BSP / MOP 1.34 then 1.55 in two rounds of the same
        # grid, the hop schedules' ratio 1.57 and 1.60)
        await api.train(dataclasses.replace(cfg, epochs=1), dsn, name="hetero-prime", schedule="mop")
        mop = await api.train(cfg, dsn, name="hetero-mop", schedule="mop")
        bsp = await api.train(cfg, dsn, name="hetero-bsp", schedule="bsp")
        fast_t = np.mean([h.wall_seconds for h in mop.hop_results if h.hop.model_id in fast_ids])
        slow_t = np.mean([h.wall_seconds for h in mop.hop_results if h.hop.model_id in slow_ids])
        results.append(("heterogeneous grid (p=0.8) BSP / MOP wall time", bsp.wall_seconds / mop.wall_seconds,
                        ">= 1.45", f"{bsp.wall_seconds:.1f}s / {mop.wall_seconds:.1f}s, measured L = {slow_t / fast_t:.1f}"))
        homo_cfg = dataclasses.replace(cfg, models=tuple(m for m in cfg.models if m.model_id in fast_ids), epochs=3)
        homo_mop = await api.train(homo_cfg, dsn, name="homo-mop", schedule="mop")
        homo_bsp = await api.train(homo_cfg, dsn, name="homo-bsp", schedule="bsp")
        results.append(("homogeneous grid MOP / BSP wall time", homo_mop.wall_seconds / homo_bsp.wall_seconds,
                        "<= 1.02", f"{homo_mop.wall_seconds:.1f}s / {homo_bsp.wall_seconds:.1f}s, 32 models x 3 epochs"))
        walls = [h.wall_seconds for h in mop.hop_results]
        computes = [h.compute_seconds for h in mop.hop_results]
        overhead = (sum(walls) - sum(computes)) / sum(walls)
        results.append(("per-hop overhead (wall - compute) / wall", overhead, "<= 0.03",
                        f"{len(walls)} hops, mean hop {np.mean(walls) * 1000:.0f} ms, "
                        f"mean overhead {np.mean(np.subtract(walls, computes)) * 1000:.1f} ms"))
        results.append(("segment utilization under MOP", mop.utilization, ">= 0.95",
                        "sum of hop durations / (segments x wall time), heterogeneous grid"))
        results.append(await fixed_order_cost(dsn, cfg, mop))

        # 6. scaling: 2 segments (1 core each) vs 1 segment given both cores, and vs 1 segment on 1 core
        one = await api.train(dataclasses.replace(homo_cfg, segments=1), dsn, name="scale-1x2cores")
        one_core = await api.train(dataclasses.replace(homo_cfg, segments=1, cores_per_segment=1), dsn,
                                   name="scale-1x1core")
        # over the hop schedule: connecting and warming up (imports, decoding, model builds) is a
        # fixed cost per run that does not depend on the segment count
        rows_two = sum(h.rows for h in homo_mop.hop_results) / homo_mop.schedule_seconds
        rows_one = sum(h.rows for h in one.hop_results) / one.schedule_seconds
        rows_one_core = sum(h.rows for h in one_core.hop_results) / one_core.schedule_seconds
        results.append(("scaling: examples/s, 2 segments / 1 segment using both cores", rows_two / rows_one,
                        ">= 1.8", f"{rows_two:,.0f} vs {rows_one:,.0f} examples/s (XLA uses 2 cores in 1 segment)"))
        results.append(("scaling: examples/s, 2 segments / 1 segment on 1 core", rows_two / rows_one_core,
                        "(parallel efficiency)", f"{rows_two:,.0f} vs {rows_one_core:,.0f} examples/s"))
        pair = standalone_pair_scaling(rows_per_hop)
        results.append(("reference: standalone Keras, 2 processes / 1 process (the machine's limit)", pair,
                        "(physical)", "the same MLP in plain processes pinned to one core each"))

        # 7. the simulator on the measured heterogeneous hops vs the measured makespans: the hop
        # schedule's (schedule_seconds), which is what the simulator models; wall time also holds
        # the source check and the warm-up
        measured = [(h.hop.model_id, h.hop.segment, h.wall_seconds) for h in mop.hop_results]
        replay = simulate.replay(measured, [2], epochs=cfg.epochs)[2]
        results.append(("simulated / measured MOP makespan (hop schedule)", replay.mop.makespan / mop.schedule_seconds,
                        "0.90-1.10", f"{replay.mop.makespan:.1f}s vs {mop.schedule_seconds:.1f}s"))
        results.append(("simulated / measured BSP makespan (hop schedule)", replay.bsp.makespan / bsp.schedule_seconds,
                        "0.90-1.10", f"{replay.bsp.makespan:.1f}s vs {bsp.schedule_seconds:.1f}s"))
        # 8. the simulator at scale: 10,000 models x 1,024 segments, MOP (random rule: the fast
        # engine; the cost-aware rule drives the scheduler itself, O(models) a hop) + BSP, one epoch
        d = simulate.heterogeneous_durations(10_000, 1024, 0.8, 8.0, seed=0)
        t_sim = time.perf_counter()
        big = simulate.compare(d, 1024, scheduling="random")
        sim_seconds = time.perf_counter() - t_sim
        results.append(("simulator: 10,000 models x 1,024 segments, MOP + BSP (s)", sim_seconds, "seconds",
                        f"MOP utilization {big.mop.utilization:.3f}, BSP / MOP {big.speedup:.1f}x"))
        # 9. cost-aware scheduling and ASHA (bench/search.py)
        from search import search_figures

        results.extend(await search_figures(dsn))
        # 10. packing at scale: 2M and 20M rows x 32 features (bench/packing.py)
        from packing import packing_figures

        results.extend(await packing_figures(dsn))
        # 11. model size: compute share, warm-up, a 2 GB state's peak memory, the bytes through the
        # client (bench/model_size.py; its relay is the tests')
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from model_size import client_bytes_figures, model_size_figures

        results.extend(await model_size_figures(dsn))
        results.extend(await client_bytes_figures(dsn))
        # 12. the catalog commands at 10,000 models (bench/catalog_scale.py)
        from catalog_scale import catalog_scale_figures

        results.extend(await catalog_scale_figures(dsn))
        # 13. `ctq load` beside `psql \\copy`: 1M and 5M x 32, a text column, 1,000 columns (bench/load.py)
        from load import load_figures

        results.extend(await load_figures(dsn))
        # 14. Greenplum beside this PostgreSQL, when a cluster is described (bench/greenplum.py)
        if os.environ.get("CTQ_BENCH_GREENPLUM_DSN"):
            from greenplum import greenplum_figures

            results.extend(await greenplum_figures(dsn, os.environ["CTQ_BENCH_GREENPLUM_DSN"]))
        bench_seconds = time.perf_counter() - t_all
        plot(slow_t / fast_t, bsp.wall_seconds / mop.wall_seconds)
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    write_results(results, bench_seconds)


def plot(measured_L: float, measured_2: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = list(range(1, 33))
    sim = [simulate.compare(simulate.heterogeneous_durations(400, w, 0.8, measured_L, seed=1), w).speedup
           for w in workers]
    theory = [simulate.theory_speedup(0.8, measured_L, w) for w in workers]
    plt.figure(figsize=(6, 4))
    plt.plot(workers, sim, label=f"simulated (400 models, p=0.8, L={measured_L:.1f})")
    plt.plot(workers, theory, "--", label="closed form (Cerebro-DS)")
    plt.scatter(list(PAPER_POINTS), list(PAPER_POINTS.values()), color="k", label="paper, measured")
    plt.scatter([2], [measured_2], color="r", marker="x", s=80, label="ctq, measured here")
    plt.xlabel("workers (segments)")
    plt.ylabel("speedup BSP / MOP")
    plt.legend()
    plt.tight_layout()
    plt.savefig(OUT / "speedup.png", dpi=120)


def write_results(results, seconds: float) -> None:
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    lines = ["# ctq benchmark results", "", f"Machine: {machine}. Benchmark wall time {seconds:.0f}s. "
             "Each figure is a ratio of two measurements taken in the same run.", "",
             "| figure | value | target | details |", "|---|---|---|---|"]
    for name, value, target, details in results:
        lines.append(f"| {name} | {value:.3f} | {target} | {details} |")
    lines += ["", "![speedup](speedup.png)", ""]
    (OUT / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())

"""The commands that read the catalog at 10,000 models (issue 21 point 6): `ctq report`, `ctq
models`, `ctq compare` and `ctq runs`, each timed on a trained run of 1,250 models and on a run of
10,000, side by side; the figure is the ratio (8 times the models: linear growth is 8, the target).

The 1,250-model run is trained for real (tiny models, 2 epochs). The 10,000-model run is that
run's catalog rows (models, hops, epochs) copied 8 times under one new run, model ids renumbered:
the commands read only the catalog, and training 10,000 models would take a quarter of an hour.

    python bench/catalog_scale.py          (part of `make bench`)
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))

from make_data import make  # noqa: E402

from ctq import api  # noqa: E402
from ctq.config import parse_config  # noqa: E402

COPIES = 8
LEARNING_RATES = [round(0.001 * i, 3) for i in range(1, 26)]
BATCH_SIZES = [64, 128, 256, 512, 1024, 100, 200, 300, 400, 500]
ARCHITECTURES = ["[{dense: 4}]", "[{dense: 8}]", "[{dense: 4}, {dense: 4}]", "[{dense: 2}]", "[{dense: 6}]"]

GRID = """
name: catalog-scale
data: {{table: public.catalog_scale, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
        task: classification}}
segments: 2
models:
{models}
search:
  space:
    learning_rate: {lrs}
    batch_size: {batches}
epochs: 2
metric: val_accuracy
"""

COPY_RUN = """
WITH source AS (SELECT * FROM ctq.runs WHERE run_id = $1)
INSERT INTO ctq.runs (name, status, schedule, started_at, finished_at, heartbeat_at, config, config_fingerprint,
                      source_table, pack_id, segments, epochs, metric, metric_mode, client_host, versions, seed,
                      cores_per_segment, engine)
SELECT name || ' x{copies}', status, schedule, started_at, finished_at, heartbeat_at, config, config_fingerprint || 'x',
       source_table, pack_id, segments, epochs, metric, metric_mode, client_host, versions, seed, cores_per_segment,
       engine
FROM source RETURNING run_id
"""


async def load_table(dsn: str) -> None:
    import asyncpg

    x, y = make(2000, 5)
    conn = await asyncpg.connect(dsn)
    try:
        cols = ", ".join(f"f{i} float8" for i in range(1, 9))
        await conn.execute(f"DROP TABLE IF EXISTS public.catalog_scale; CREATE TABLE public.catalog_scale ({cols}, "
                           "label int)")
        await conn.copy_records_to_table("catalog_scale", records=[tuple(map(float, r)) + (int(v),)
                                                                   for r, v in zip(x, y)])
    finally:
        await conn.close()


async def replicate(dsn: str, run_id: int, copies: int) -> int:
    """A new run holding ``copies`` copies of run ``run_id``'s models, hops and epochs."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            new = await conn.fetchval(COPY_RUN.format(copies=copies), run_id)
            step = await conn.fetchval("SELECT max(model_id) FROM ctq.models WHERE run_id = $1", run_id)
            await conn.execute(
                "INSERT INTO ctq.models (run_id, model_id, name, architecture, hyperparameters, seed, status, "
                "epochs_done, train_loss, train_metric, val_loss, val_metric, message, updated_at) "
                "SELECT $2, model_id + k * $3, name || '#' || k, architecture, hyperparameters, seed, status, "
                "epochs_done, train_loss, train_metric, val_loss, val_metric, message, updated_at "
                "FROM ctq.models, generate_series(0, $4 - 1) k WHERE run_id = $1", run_id, new, step, copies)
            await conn.execute(
                "INSERT INTO ctq.hops SELECT $2, model_id + k * $3, epoch, segment, started_at, finished_at, "
                "compute_seconds, rows, loss, metric, executed_on FROM ctq.hops, generate_series(0, $4 - 1) k "
                "WHERE run_id = $1", run_id, new, step, copies)
            await conn.execute(
                "INSERT INTO ctq.epochs SELECT $2, model_id + k * $3, epoch, train_loss, train_metric, val_loss, "
                "val_metric, finished_at FROM ctq.epochs, generate_series(0, $4 - 1) k WHERE run_id = $1",
                run_id, new, step, copies)
        return new
    finally:
        await conn.close()


def timed(dsn: str, home: str, *args: str) -> tuple[float, int]:
    """Seconds the real CLI takes for ``args`` (in a subprocess, as a user runs it) and the bytes
    it printed."""
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=home)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ctq.cli", *args], capture_output=True, env=env, check=True)
    return time.perf_counter() - started, len(proc.stdout)


async def catalog_scale_figures(dsn: str) -> list[tuple]:
    await load_table(dsn)
    models = "\n".join(f"  - {{name: a{i}, layers: {layers}}}" for i, layers in enumerate(ARCHITECTURES))
    cfg = parse_config(GRID.format(models=models, lrs=LEARNING_RATES, batches=BATCH_SIZES), source_path="<bench>",
                       base_dir=str(REPO / "examples"))
    trained = await api.train(cfg, dsn)
    small = trained.run_id
    n = len(trained.leaderboard)
    big = await replicate(dsn, small, COPIES)
    home = tempfile.mkdtemp(prefix="ctq-bench-home-")
    results = []
    with tempfile.TemporaryDirectory() as out:
        commands = {
            "report": lambda run: ("report", str(run), "--out", f"{out}/r{run}.html"),
            "models --json": lambda run: ("models", str(run), "--json"),
            "compare --json": lambda run: ("compare", str(run), str(run), "--json"),
            "runs --json": lambda run: ("runs", "--json"),
        }
        for name, args in commands.items():
            times = {}
            for run in itertools.chain.from_iterable(itertools.repeat((small, big), 2)):  # interleaved, twice
                seconds, _ = timed(dsn, home, *args(run))
                times[run] = min(seconds, times.get(run, seconds))
            size = ""
            if name == "report":
                size = (f"; {os.path.getsize(f'{out}/r{big}.html') / 2**20:.1f} MiB vs "
                        f"{os.path.getsize(f'{out}/r{small}.html') / 2**20:.1f} MiB")
            results.append((f"ctq {name}: {n * COPIES:,} models / {n:,} models (time)", times[big] / times[small],
                            f"<= {COPIES}", f"{times[big]:.2f}s vs {times[small]:.2f}s{size}"))
    return results


if __name__ == "__main__":
    from alone import run_alone

    run_alone("ctq-bench-catalog-", catalog_scale_figures)

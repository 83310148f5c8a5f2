"""Model-size figures (issue 18), each a ratio of measurements taken side by side:

* the compute share of segment time for a ~50 MB state (2 x dense 2048 on 64 inputs, 10 classes,
  Adam: 4.3M parameters; four learning rates on two segments, two epochs): sum of the hops'
  compute seconds / (segments x hop schedule), next to segment utilization (which counts reading
  and writing the state as busy time);
* warm-up / first epoch of that grid, and the warm-up of a second run of the same grid (the
  persistent compilation cache then holds every program) / the first run's;
* a state of >= 2 GB (2 x dense 13000: 170M parameters with Adam's two moments) trains one epoch;
  the peak resident memory of a segment backend (VmHWM, read from /proc while the run goes) / the
  state's stored bytes.

    python bench/model_size.py      (part of `make bench`; loads its own table; ~10 minutes and
                                     ~12 GB of memory on 2 cores)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import asyncpg
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ctq import api  # noqa: E402
from ctq.config import parse_config  # noqa: E402

FEATURES, CLASSES = 64, 10

GRID = """
name: {name}
data: {{table: {table}, features: [{features}], label: label, task: classification,
        validation_fraction: 0.1}}
segments: 2
models:
  - {{name: {model}, layers: [{{dense: {units}, activation: relu}}, {{dense: {units}, activation: relu}}]}}
search:
  seed: 1
  space:
    optimizer: [adam]
    learning_rate: {rates}
    batch_size: [{batch}]
epochs: {epochs}
metric: val_accuracy
"""


def config(name: str, table: str, units: int, rates: list[float], batch: int, epochs: int):
    text = GRID.format(name=name, table=table, features=", ".join(f"f{i}" for i in range(1, FEATURES + 1)),
                       model=f"dense{units}x2", units=units, rates=rates, batch=batch, epochs=epochs)
    return parse_config(text, source_path="<bench>", base_dir=str(REPO))


async def load_table(dsn: str, table: str, rows: int, seed: int) -> None:
    """A 10-class label that a linear model of the 64 features predicts well."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    y = np.argmax(x @ rng.normal(size=(FEATURES, CLASSES)), axis=1)
    conn = await asyncpg.connect(dsn)
    cols = ", ".join(f"f{i} float8" for i in range(1, FEATURES + 1))
    await conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({cols}, label int)")
    await conn.copy_records_to_table(table.split(".")[-1], schema_name=table.split(".")[0],
                                     records=[tuple(map(float, r)) + (int(label),) for r, label in zip(x, y)])
    await conn.close()


async def install_ctq(dsn: str) -> None:
    from ctq import catalog
    from ctq.engines import detect

    conn = await asyncpg.connect(dsn)
    try:
        await catalog.ensure_installed(conn, await detect(conn))
    finally:
        await conn.close()


def warmup_seconds(result) -> float:
    """Connecting and warming up the segments: the run's wall time less the source check, the
    packing and the hop schedule."""
    return result.wall_seconds - result.check_seconds - result.pack_seconds - result.schedule_seconds


async def keras_import_seconds(dsn: str) -> float:
    """Seconds a new server backend takes to import Keras (ctq.probe, as ctq doctor shows it): the
    part of every segment's warm-up that no cache spares."""
    conn = await asyncpg.connect(dsn)
    try:
        return float(json.loads(await conn.fetchval("SELECT ctq.probe()"))["keras_import_seconds"])
    finally:
        await conn.close()


def vm_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # the backend ended between the query and the read
        pass
    return 0


async def peak_backend_rss(dsn: str, name: str, stop: asyncio.Event) -> int:
    """The highest VmHWM of run ``name``'s segment backends, sampled every 0.2 s until ``stop``
    (VmHWM is the process's own peak, so sampling misses nothing but a backend's last 0.2 s). On
    Greenplum the processes that train are the segments' (on this host: a loopback cluster), each
    titled with its session (``con<sess_id>``)."""
    conn = await asyncpg.connect(dsn)
    greenplum = await conn.fetchval("SELECT to_regclass('gp_segment_configuration') IS NOT NULL")
    peak = 0
    try:
        while not stop.is_set():
            rows = await conn.fetch(f"SELECT a.pid, {'a.sess_id' if greenplum else 'NULL'} AS sess "
                                    "FROM pg_stat_activity a JOIN ctq.runs r "
                                    "ON a.application_name LIKE 'ctq run ' || r.run_id || ' segment %' "
                                    "WHERE r.name = $1", name)
            pids = [r["pid"] for r in rows] if not greenplum else segment_processes({r["sess"] for r in rows})
            peak = max([peak] + [vm_hwm_bytes(p) for p in pids])
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
    finally:
        await conn.close()
    return peak


def segment_processes(sessions: set[int]) -> list[int]:
    """The pids of this host's Greenplum segment processes (QEs) serving ``sessions``."""
    marks = {f" con{s} ".encode() for s in sessions}
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ") + b" "
            except OSError:
                continue
            if b" seg" in title and any(m in title for m in marks):
                pids.append(int(entry.name))
    return pids


async def state_bytes(dsn: str, run_id: int) -> tuple[int, int]:
    """(bytes of the largest model's stored state, its parts) of run ``run_id`` (its checkpoints:
    the final states; on Greenplum the table behind ctq's views)."""
    conn = await asyncpg.connect(dsn)
    table = "ctq_catalog.model_states" if await conn.fetchval(
        "SELECT to_regclass('ctq_catalog.model_states') IS NOT NULL") else "ctq.model_states"
    row = await conn.fetchrow("SELECT sum(octet_length(data))::bigint AS bytes, count(*) AS parts "
                              f"FROM {table} WHERE run_id = $1 GROUP BY model_id ORDER BY 1 DESC LIMIT 1", run_id)
    await conn.close()
    return row["bytes"], row["parts"]


async def model_size_figures(dsn: str) -> list[tuple[str, float, str, str]]:
    results = []
    # 1. the ~50 MB state: compute share, and warm-up in proportion (first run, then a second). Four
    # models on the two segments (a grid of as many models as segments leaves MOP gaps it cannot
    # fill, unrelated to the state); ctq installed beforehand, as for any run but a server's first
    # (whose warm-up also waits for the install): the compile cache is cold in the first run.
    await load_table(dsn, "public.size_bench", 20_000, seed=18)
    await install_ctq(dsn)
    mid = config("size-4m", "public.size_bench", 2048, [0.001, 0.0003, 0.0001, 0.00003], 64, 2)
    first = await api.train(mid, dsn)
    state, parts = await state_bytes(dsn, first.run_id)
    results.append(("compute share of segment time, 4.3M-parameter model (Adam)", first.compute_share, ">= 0.95",
                    f"state {state / 2**20:.0f} MiB in {parts} parts; segment utilization {first.utilization:.3f}; "
                    f"{first.hops} hops, {first.schedule_seconds:.1f}s of hop schedule"))
    first_epoch = first.schedule_seconds / mid.epochs
    results.append(("warm-up / first epoch, 4.3M-parameter grid (first run)", warmup_seconds(first) / first_epoch,
                    "<= 0.2", f"{warmup_seconds(first):.1f}s of warm-up, {first_epoch:.1f}s an epoch"))
    second = await api.train(mid, dsn, name="size-4m-again")
    results.append(("second run's warm-up / first run's (compile cache)", warmup_seconds(second) / warmup_seconds(first),
                    "<= 0.2", f"{warmup_seconds(second):.1f}s vs {warmup_seconds(first):.1f}s, same grid; of which "
                    f"a new backend's Keras import {await keras_import_seconds(dsn):.2f}s (nothing cached can spare it)"))

    # 2. a >= 2 GB state trains one epoch; the segment backends' peak memory against it
    await load_table(dsn, "public.size_bench_big", 1_000, seed=19)
    big = config("size-2gb", "public.size_bench_big", 13_000, [0.0001], 100, 1)
    stop = asyncio.Event()
    sampler = asyncio.create_task(peak_backend_rss(dsn, "size-2gb", stop))
    try:
        trained = await api.train(big, dsn)
    finally:
        stop.set()
        peak = await sampler
    state, parts = await state_bytes(dsn, trained.run_id)
    results.append(("peak segment backend RSS / state, 2 GB state (170M parameters, Adam)", peak / state, "<= 2.5",
                    f"{trained.status}: state {state / 2**30:.2f} GiB in {parts} parts, peak RSS {peak / 2**30:.2f} GiB; "
                    f"{trained.hops} hops in {trained.schedule_seconds:.0f}s, compute share {trained.compute_share:.3f}, "
                    f"warm-up {warmup_seconds(trained):.0f}s"))
    return results


async def client_bytes_figures(dsn: str) -> list[tuple[str, float, str, str]]:
    """Bytes through ctq's client per hop, counted at a relay in front of the server (the
    coordinator, on Greenplum), against the state a hop moves: the 4.3M-parameter grid again."""
    from conftest import CountingRelay

    await load_table(dsn, "public.size_bench", 20_000, seed=18)
    grid = config("size-4m-relay", "public.size_bench", 2048, [0.001, 0.0003], 64, 1)
    async with CountingRelay(dsn) as relay:
        run = await api.train(grid, relay.dsn)
    state, _ = await state_bytes(dsn, run.run_id)
    per_hop = (relay.bytes_in + relay.bytes_out) / run.hops
    return [("bytes through the client per hop / state bytes, 4.3M-parameter model", per_hop / state, "0 (the "
             "state never passes)", f"{run.engine}: {relay.bytes_out} bytes out, {relay.bytes_in} in over {run.hops} "
             f"hops, the whole run (warm-up, catalog, progress); state {state / 2**20:.0f} MiB")]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", help="measure on this server (e.g. a Greenplum coordinator) instead of a "
                                      "throwaway embedded PostgreSQL; it must have ctq installed")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    if args.dsn:
        async def on_server() -> None:
            for figures in (model_size_figures, client_bytes_figures):
                for name, value, target, detail in await figures(args.dsn):
                    print(f"{name}: {value:.3f} (target {target}) - {detail}", flush=True)

        asyncio.run(on_server())
    else:
        from alone import run_alone

        run_alone("ctq-bench-size-", model_size_figures, client_bytes_figures)

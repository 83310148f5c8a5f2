"""Greenplum beside PostgreSQL (issue 23), each figure a ratio of the two engines measured side by
side in one run, on the same data:

* the source check (1M rows x 32 features: ``inspect_source``, alternating the engines) and the
  packing of the same table, Greenplum / PostgreSQL; the same for a wide table (2,000 x 1,598);
* the gap between consecutive hops on a segment (the median of the next hop's start minus the
  hop's recorded end, from the catalog), Greenplum / PostgreSQL, for a grid of small models whose
  hops are short, so that the gap shows;
* the share of a training's ``ctq.record_hop`` calls whose every statement Greenplum dispatched
  to one segment, with the sessions under each optimizer (ORCA and the planner), as the
  coordinator's log shows each dispatch (``test_print_direct_dispatch_info``; reading the log
  needs a superuser's DSN).

    CTQ_BENCH_GREENPLUM_DSN=postgresql://gpadmin@host:port/db python bench/greenplum.py
    (part of `make bench` when CTQ_BENCH_GREENPLUM_DSN is set; ``ctq install`` must have been run
    on that database; ~5 minutes on 2 cores)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "tests"))

from make_data import make  # noqa: E402

from ctq import api, catalog  # noqa: E402
from ctq.config import parse_config  # noqa: E402
from ctq.engines import detect  # noqa: E402
from ctq.packing import ensure_pack, inspect_source  # noqa: E402

CHECK_ROWS, WIDTH = 1_000_000, 32
HOP_ROWS = 8000

CHECK_GRID = """
name: gp-check
data: {{table: public.ctq_bench_check, features: [{features}], label: label, task: classification}}
segments: 2
models: [{{layers: []}}]
epochs: 1
"""

HOP_GRID = """
name: gp-hops
data: {table: public.ctq_bench_hops, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
       task: classification, validation_fraction: 0.1}
segments: 2
models:
  - {name: tiny, layers: [{dense: 8}]}
search: {seed: 1, space: {learning_rate: [0.01, 0.005, 0.003, 0.002, 0.001, 0.0005], batch_size: [256]}}
epochs: 3
metric: val_accuracy
"""


WIDE_ROWS, WIDE_COLUMNS = 2000, 1598  # a user trial's wide table: 1,598 float4 columns

WIDE_GRID = """
name: gp-wide
data: {table: public.ctq_bench_wide, features: all, exclude: [id], label: label, task: classification}
segments: 2
models: [{layers: []}]
epochs: 1
"""


async def wide_table(conn) -> None:
    """The same 2,000 x 1,598 table on either engine: deterministic values."""
    cols = ", ".join(f"(((g * {7919 + 2 * i} + {104729 * i}) % 1009) / 1009.0)::float4 AS c{i}"
                     for i in range(WIDE_COLUMNS))
    await conn.execute("DROP TABLE IF EXISTS public.ctq_bench_wide")
    await conn.execute(f"CREATE TABLE public.ctq_bench_wide AS SELECT g AS id, {cols}, (g % 2) AS label "
                       f"FROM generate_series(1, {WIDE_ROWS}) g")


async def check_table(conn) -> None:
    """The same 1M x 32 table on either engine: deterministic values, no random()."""
    cols = ", ".join(f"((g::int8 * {7919 + 2 * i} + {104729 * i}) % 1000003)::float8 / 1000003 AS f{i}"
                     for i in range(1, WIDTH + 1))
    await conn.execute("DROP TABLE IF EXISTS public.ctq_bench_check")
    await conn.execute(f"CREATE TABLE public.ctq_bench_check AS SELECT {cols}, (g % 3)::int AS label "
                       f"FROM generate_series(1, {CHECK_ROWS}) g")
    await conn.execute("ANALYZE public.ctq_bench_check")


async def check_seconds(dsn: str, cfg) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        engine = await detect(conn)
        async with engine.snapshot(dsn) as moment:
            t0 = time.perf_counter()
            await inspect_source(moment.conn, cfg.data, engine, cfg.seed)
            return time.perf_counter() - t0
    finally:
        await conn.close()


async def pack_seconds(dsn: str, cfg) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        engine = await detect(conn)
        await catalog.ensure_installed(conn, engine)
        async with engine.snapshot(dsn) as moment:
            source = await inspect_source(moment.conn, cfg.data, engine, cfg.seed)
            t0 = time.perf_counter()
            pack = await ensure_pack(conn, dsn, engine, cfg.data, source, 2, cfg.seed, moment)
            seconds = time.perf_counter() - t0
        await conn.execute(f"DROP TABLE {pack.table_name}")
        await conn.execute("DELETE FROM ctq.packs WHERE pack_id = $1", pack.pack_id)
        return seconds
    finally:
        await conn.close()


async def hop_gaps(dsn: str, run_id: int) -> list[float]:
    """Seconds from each hop's recorded end to the start of the next hop on its segment."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT segment, started_at, finished_at FROM ctq.hops WHERE run_id = $1 "
                                "ORDER BY segment, started_at", run_id)
    finally:
        await conn.close()
    return [(b["started_at"] - a["finished_at"]).total_seconds() for a, b in zip(rows, rows[1:])
            if a["segment"] == b["segment"]]


async def record_hop_dispatch(dsn: str, optimizer: str) -> tuple[int, int]:
    """(calls of ctq.record_hop whose every statement went to one segment, calls) in a training of
    HOP_GRID whose sessions run under ``optimizer``, as the coordinator logs each dispatch with its
    statement's context (the suite's reading of the log: test_greenplum.coordinator_log_since)."""
    from test_greenplum import coordinator_log_end, coordinator_log_since

    conn = await asyncpg.connect(dsn)
    try:
        end = await coordinator_log_end(conn)
        options = f"optimizer={optimizer}&test_print_direct_dispatch_info=on&log_min_messages=info"
        await api.train(parse_config(HOP_GRID, source_path="<bench>", base_dir=str(REPO)),
                        dsn + ("&" if "?" in dsn else "?") + options)
        calls: dict[tuple[str, str], bool] = {}
        for e in await coordinator_log_since(conn, end):
            # (csvlog: 10 the session, 14 its distributed transaction (one hop, one call), 19 the
            # message, 24 the statement's context)
            if len(e) > 23 and "Dispatch command to" in e[18] and "function ctq.record_hop(" in e[23]:
                call = (e[9], e[13])
                calls[call] = calls.get(call, True) and "SINGLE content" in e[18]
        return sum(calls.values()), len(calls)
    finally:
        await conn.close()


async def greenplum_figures(pg_dsn: str, gp_dsn: str) -> list[tuple[str, float, str, str]]:
    results = []
    cfg = parse_config(CHECK_GRID.format(features=", ".join(f"f{i}" for i in range(1, WIDTH + 1))),
                       source_path="<bench>", base_dir=str(REPO))
    for dsn in (pg_dsn, gp_dsn):
        conn = await asyncpg.connect(dsn)
        await catalog.ensure_installed(conn, await detect(conn))
        await check_table(conn)
        await conn.close()
    times: dict[str, list[float]] = {pg_dsn: [], gp_dsn: []}
    for _ in range(2):
        for dsn in (pg_dsn, gp_dsn):
            times[dsn].append(await check_seconds(dsn, cfg))
    pg, gp = statistics.median(times[pg_dsn]), statistics.median(times[gp_dsn])
    results.append((f"Greenplum / PostgreSQL: source check, {CHECK_ROWS / 1e6:g}M x {WIDTH}", gp / pg, "<= 2",
                    f"{gp:.1f}s vs {pg:.1f}s (median of {len(times[gp_dsn])} each, alternating)"))
    pack = {dsn: await pack_seconds(dsn, cfg) for dsn in (pg_dsn, gp_dsn)}
    results.append((f"Greenplum / PostgreSQL: packing, {CHECK_ROWS / 1e6:g}M x {WIDTH}", pack[gp_dsn] / pack[pg_dsn],
                    "(reference)", f"{pack[gp_dsn]:.1f}s vs {pack[pg_dsn]:.1f}s"))
    wide = parse_config(WIDE_GRID, source_path="<bench>", base_dir=str(REPO))
    for dsn in (pg_dsn, gp_dsn):
        conn = await asyncpg.connect(dsn)
        await wide_table(conn)
        await conn.close()
    check = {dsn: await check_seconds(dsn, wide) for dsn in (pg_dsn, gp_dsn)}
    pack = {dsn: await pack_seconds(dsn, wide) for dsn in (pg_dsn, gp_dsn)}
    results.append((f"Greenplum / PostgreSQL: check + packing, {WIDE_ROWS:,} x {WIDE_COLUMNS:,} (wide)",
                    (check[gp_dsn] + pack[gp_dsn]) / (check[pg_dsn] + pack[pg_dsn]), "(reference)",
                    f"check {check[gp_dsn]:.1f}s + pack {pack[gp_dsn]:.1f}s vs {check[pg_dsn]:.1f}s + "
                    f"{pack[pg_dsn]:.1f}s"))
    for dsn in (pg_dsn, gp_dsn):
        conn = await asyncpg.connect(dsn)
        await conn.execute("DROP TABLE public.ctq_bench_check, public.ctq_bench_wide")
        x, y = make(HOP_ROWS, 3)
        cols = ", ".join(f"f{i} float8" for i in range(1, 9))
        await conn.execute(f"DROP TABLE IF EXISTS public.ctq_bench_hops; CREATE TABLE public.ctq_bench_hops "
                           f"({cols}, label int)")
        await conn.copy_records_to_table("ctq_bench_hops", records=[tuple(map(float, r)) + (int(l),)
                                                                    for r, l in zip(x, y)])
        await conn.close()
    hops_cfg = parse_config(HOP_GRID, source_path="<bench>", base_dir=str(REPO))
    runs = {dsn: await api.train(hops_cfg, dsn) for dsn in (pg_dsn, gp_dsn)}
    gaps = {dsn: await hop_gaps(dsn, runs[dsn].run_id) for dsn in (pg_dsn, gp_dsn)}
    pg, gp = statistics.median(gaps[pg_dsn]), statistics.median(gaps[gp_dsn])
    results.append(("Greenplum / PostgreSQL: gap between consecutive hops on a segment", gp / pg, "<= 2",
                    f"median {gp * 1000:.1f} ms vs {pg * 1000:.1f} ms over {len(gaps[gp_dsn])} and "
                    f"{len(gaps[pg_dsn])} gaps; hop schedule {runs[gp_dsn].schedule_seconds:.1f}s vs "
                    f"{runs[pg_dsn].schedule_seconds:.1f}s"))
    for optimizer in ("on", "off"):
        single, calls = await record_hop_dispatch(gp_dsn, optimizer)
        results.append((f"Greenplum: record_hop calls dispatched to one segment only, optimizer={optimizer}",
                        single / max(calls, 1), "1.0", f"{single} of {calls} calls (a hop's, in a training)"))
    for dsn in (pg_dsn, gp_dsn):
        conn = await asyncpg.connect(dsn)
        await conn.execute("DROP TABLE public.ctq_bench_hops")
        await conn.close()
    return results


if __name__ == "__main__":
    import functools

    from alone import run_alone

    gp_dsn = os.environ.get("CTQ_BENCH_GREENPLUM_DSN")
    if not gp_dsn:
        sys.exit("set CTQ_BENCH_GREENPLUM_DSN to a Greenplum database with ctq installed")
    run_alone("ctq-bench-gp-", functools.partial(greenplum_figures, gp_dsn=gp_dsn))

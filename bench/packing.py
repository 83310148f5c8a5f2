"""Packing at scale (issue 7): check + pack time, peak backend memory and rows/s for 2M and 20M
rows x 32 float8 features, each beside a plain copy of the same table (CREATE TABLE AS) measured
in the same run. Memory should grow with the buffer size, not with the table.

    python bench/packing.py [--rows 2000000,20000000]     (part of `make bench`)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ctq.config import parse_config  # noqa: E402
from ctq.engines import detect  # noqa: E402
from ctq.packing import ensure_pack, inspect_source  # noqa: E402

WIDTH = 32


class PeakRss:
    """Polls the RSS of every postgres process (50 ms) and keeps each one's peak, in MiB."""

    def __init__(self):
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if not open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"postgres:"):
                        continue
                    for line in open(f"/proc/{pid}/status"):
                        if line.startswith("VmRSS:"):
                            self.peak[pid] = max(self.peak.get(pid, 0), int(line.split()[1]) // 1024)
                except OSError:
                    pass
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def max_mib(self) -> int:
        return max(self.peak.values(), default=0)


def grid(rows: int):
    features = ", ".join(f"f{i}" for i in range(1, WIDTH + 1))
    return parse_config(f"""
name: pack{rows}
data: {{table: public.pack_src, features: [{features}], label: label, task: classification}}
segments: 2
models: [{{layers: []}}]
epochs: 1
""", source_path="<bench>", base_dir=str(REPO))


async def measure(dsn: str, rows: int) -> list[tuple[str, float, str, str]]:
    conn = await asyncpg.connect(dsn)
    cols = ", ".join(f"random() AS f{i}" for i in range(1, WIDTH + 1))
    await conn.execute("DROP TABLE IF EXISTS public.pack_src, public.pack_copy")
    await conn.execute(f"CREATE TABLE public.pack_src AS SELECT {cols}, (random() * 2)::int AS label "
                       f"FROM generate_series(1, {rows})")
    await conn.execute("VACUUM ANALYZE public.pack_src")
    t0 = time.perf_counter()
    await conn.execute("CREATE TABLE public.pack_copy AS SELECT * FROM public.pack_src")
    copy_s = time.perf_counter() - t0
    await conn.execute("DROP TABLE public.pack_copy")
    cfg = grid(rows)
    engine = await detect(conn)
    with PeakRss() as rss:
        from ctq import catalog

        await catalog.ensure_installed(conn, engine)
        async with engine.snapshot(dsn) as moment:
            t0 = time.perf_counter()
            source = await inspect_source(moment.conn, cfg.data, engine, cfg.seed)
            check_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            pack = await ensure_pack(conn, dsn, engine, cfg.data, source, 2, cfg.seed, moment)
            pack_s = time.perf_counter() - t1
    async with engine.snapshot(dsn) as moment:  # the next run's check: the source unchanged, its pack there
        t0 = time.perf_counter()
        await inspect_source(moment.conn, cfg.data, engine, cfg.seed)
        recheck_s = time.perf_counter() - t0
    await conn.execute(f"DROP TABLE {pack.table_name}")
    await conn.execute("DELETE FROM ctq.packs WHERE pack_id = $1", pack.pack_id)
    await conn.execute("DROP TABLE public.pack_src")
    await conn.close()
    label = f"{rows / 1e6:g}M x {WIDTH}"
    total = check_s + pack_s
    return [
        (f"packing {label}: (check + pack) / plain table copy", total / copy_s, "(reference)",
         f"check {check_s:.1f}s + pack {pack_s:.1f}s vs CREATE TABLE AS {copy_s:.1f}s; "
         f"{rows / total:,.0f} rows/s"),
        (f"packing {label}: peak backend RSS (MiB)", rss.max_mib, "< 1024", "any postgres process, polled every 50 ms"),
        (f"check of an unchanged {label} source already packed / its first check", recheck_s / check_s, "(the saving)",
         f"{recheck_s:.2f}s vs {check_s:.2f}s: the content fingerprint alone, the profile from its pack"),
    ]


async def packing_figures(dsn: str, sizes=(2_000_000, 20_000_000)) -> list[tuple[str, float, str, str]]:
    results = []
    for rows in sizes:
        results += await measure(dsn, rows)
    return results


if __name__ == "__main__":
    import functools

    from alone import run_alone

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="2000000,20000000")
    rows = [int(r) for r in parser.parse_args().rows.split(",")]
    run_alone("ctq-bench-pack-", *(functools.partial(measure, rows=n) for n in rows))

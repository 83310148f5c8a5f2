"""`ctq load` beside `psql \\copy` (issue 25): wall-clock ratio and ctq's peak RSS for the same file
into the same types, measured side by side in one run.

Files: 1M x 32 float8 + an int8 label (274 MB: numbers, which go to COPY as bytes), the same with a
text label (parsed here), 5M x 32 (1.4 GB) and 1,000 columns x 50,000 rows. About 6 minutes on
2 cores and 6 GB of disk.

    python bench/load.py [--sizes 1000000,5000000]     (part of `make bench`)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ctq.embedded import find_pg_bindir  # noqa: E402

RSS_CODE = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)")


def write_csv(path: Path, rows: int, width: int, label: str = "int") -> None:
    """``rows`` x ``width`` normal floats (6 decimals) and a label column: 0/1, or yes/no text."""
    rng = np.random.default_rng(0)
    names = ["yes", "no"] if label == "text" else ["1", "0"]
    with open(path, "w") as f:
        f.write(",".join(f"x{i}" for i in range(width)) + ",label\n")
        step = max(1, 2_000_000 // width)
        for start in range(0, rows, step):
            n = min(step, rows - start)
            x = rng.normal(size=(n, width)).round(6).tolist()
            y = rng.integers(0, 2, size=n).tolist()
            f.write("".join(",".join(map(repr, r)) + "," + names[v] + "\n" for r, v in zip(x, y)))


def timed(args: list[str], env: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS in MiB) of one command, run as the only child of a fresh interpreter."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS_CODE, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{args[:4]} failed: {proc.stderr[-500:]}")
    return wall, int(proc.stderr.strip().splitlines()[-1]) // 1024


async def measure(dsn: str, path: Path, label: str) -> list[tuple[str, float, str, str]]:
    conn = await asyncpg.connect(dsn)
    env = dict(os.environ, CTQ_DSN=dsn)
    psql = str(find_pg_bindir() / "psql")
    size_mb = path.stat().st_size / 1e6
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # both read from the page cache
    ctq = [sys.executable, "-m", "ctq.cli", "load", str(path), "--table", "public.bench_load", "--replace"]
    ctq_s, ctq_rss = timed(ctq, env)
    await conn.execute("DROP TABLE IF EXISTS public.bench_psql")
    await conn.execute("CREATE TABLE public.bench_psql (LIKE public.bench_load)")  # the same types
    copy = [psql, dsn, "-qc", f"\\copy public.bench_psql from '{path}' csv header"]
    psql_s, _ = timed(copy, env)
    await conn.execute("TRUNCATE public.bench_psql")
    ctq_s = min(ctq_s, timed(ctq, env)[0])  # the better of two, each side
    psql_s = min(psql_s, timed(copy, env)[0])
    rows = await conn.fetchval("SELECT count(*) FROM public.bench_load")
    same = await conn.fetchval("SELECT count(*) FROM (SELECT * FROM public.bench_load EXCEPT ALL "
                               "SELECT * FROM public.bench_psql) d")
    await conn.execute("DROP TABLE public.bench_load, public.bench_psql")
    await conn.close()
    detail = (f"{label}, {size_mb:.0f} MB, {rows} rows: ctq {ctq_s:.1f} s, psql {psql_s:.1f} s "
              f"({size_mb / ctq_s:.0f} vs {size_mb / psql_s:.0f} MB/s); rows differing from psql's: {same}")
    return [(f"ctq load / psql \\copy, {label} (wall)", ctq_s / psql_s, "<= 2", detail),
            (f"ctq load peak RSS, {label} (MiB)", ctq_rss, "<= 300", f"{size_mb:.0f} MB file")]


async def load_figures(dsn: str, sizes=(1_000_000, 5_000_000)) -> list[tuple[str, float, str, str]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="ctq-bench-load-", dir="/tmp") as tmp:
        files = []
        for rows in sizes:
            files.append((f"{rows / 1e6:g}M x 32 numbers", rows, 32, "int"))
            if rows == sizes[0]:
                files.append((f"{rows / 1e6:g}M x 32 with a text column", rows, 32, "text"))
        files.append(("50k x 1,000 columns", 50_000, 999, "int"))
        for label, rows, width, kind in files:
            path = Path(tmp) / "file.csv"
            write_csv(path, rows, width, kind)
            results += await measure(dsn, path, label)
            path.unlink()
    return results


if __name__ == "__main__":
    import functools

    from alone import run_alone

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,5000000")
    sizes = tuple(int(r) for r in parser.parse_args().sizes.split(","))
    run_alone("ctq-bench-load-", functools.partial(load_figures, sizes=sizes))

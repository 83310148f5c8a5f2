"""The Python API behind the CLI: each function does one command's real work.

Order in :func:`train` matters for "bad input writes nothing": the configuration is validated
without a database, then the source table is checked read-only, and only then is anything
installed, packed or recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from ctq import __version__, catalog
from ctq.config import RunConfig, load_config
from ctq.coordinator import Coordinator, Outcome, Progress, segment_cores
from ctq.errors import DatabaseError, Interrupted, NotFound, RunFailed
from ctq.packing import ensure_pack, inspect_source
from ctq.scheduler import BspScheduler, MopScheduler

SCHEDULERS = {"mop": MopScheduler, "bsp": BspScheduler}


@asynccontextmanager
async def connect(dsn: str):
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseError(f"cannot connect to the database ({exc}); check --dsn / CTQ_DSN or `ctq db status`") from exc
    try:
        yield conn
    finally:
        await conn.close()


@dataclass
class TrainResult:
    run_id: int
    status: str
    name: str
    best_model_id: int | None
    best_model: str | None
    best_metric: float | None
    metric: str
    wall_seconds: float
    hops: int
    retries: int
    utilization: float
    failed_models: dict[int, str]
    leaderboard: list[dict]
    pack_reused: bool

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id, "status": self.status, "name": self.name,
            "best_model_id": self.best_model_id, "best_model": self.best_model,
            "best_metric": self.best_metric, "metric": self.metric,
            "wall_seconds": round(self.wall_seconds, 3), "hops": self.hops, "retries": self.retries,
            "segment_utilization": round(self.utilization, 4),
            "failed_models": {str(k): v for k, v in self.failed_models.items()},
            "pack_reused": self.pack_reused,
            "leaderboard": [
                {k: row[k] for k in ("rank", "model_id", "name", "status", "epochs_done", "hyperparameters",
                                     "train_loss", "train_metric", "val_loss", "val_metric", "score")}
                for row in self.leaderboard
            ],
        }


def versions() -> dict:
    return {"ctq": __version__, "python": platform.python_version()}


def default_segments() -> int:
    return max(1, os.cpu_count() or 1)


async def train(config: RunConfig | str, dsn: str, *, name: str | None = None, schedule: str = "mop",
                progress_factory=None) -> TrainResult:
    """Run a whole model selection; returns when every model has trained its epochs (or failed)."""
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    if name:
        cfg = dataclasses.replace(cfg, name=name)
    if schedule not in SCHEDULERS:
        raise ValueError(f"unknown schedule {schedule!r}")
    segments = cfg.segments or default_segments()
    async with connect(dsn) as conn:
        source = await inspect_source(conn, cfg.data)
        await catalog.ensure_installed(conn)
        pack = await ensure_pack(conn, cfg.data, source, segments, cfg.seed)
        run_id = await catalog.create_run(conn, config=cfg, pack=pack, segments=segments, schedule=schedule,
                                          versions=versions())
        scheduler = SCHEDULERS[schedule]([m.model_id for m in cfg.models], segments, cfg.epochs, cfg.seed)
        cpus = os.cpu_count() or 1
        progress: Progress | None = progress_factory(run_id, cfg, segments) if progress_factory else None
        coordinator = Coordinator(dsn, run_id, scheduler, segments,
                                  segment_cores(segments, cpus, cfg.cores_per_segment), epochs=cfg.epochs,
                                  progress=progress)
        started = time.perf_counter()
        try:
            outcome: Outcome = await coordinator.run()
        except (asyncio.CancelledError, KeyboardInterrupt):
            await catalog.finish_run(conn, run_id, "interrupted", "cancelled by the user")
            raise Interrupted(f"run {run_id} interrupted")
        except RunFailed as exc:
            await catalog.finish_run(conn, run_id, "failed", str(exc))
            raise
        except BaseException as exc:
            await catalog.finish_run(conn, run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        wall = time.perf_counter() - started
        if outcome.failed_models:
            status = "failed"
            message = f"{len(outcome.failed_models)} of {len(cfg.models)} models failed"
        else:
            status, message = "succeeded", None
        await catalog.finish_run(conn, run_id, status, message)
        board = await catalog.leaderboard(conn, run_id)
    best = next((row for row in board if row["score"] is not None), None)
    return TrainResult(
        run_id=run_id, status=status, name=cfg.name,
        best_model_id=best["model_id"] if best else None, best_model=best["name"] if best else None,
        best_metric=best["score"] if best else None, metric=cfg.metric, wall_seconds=wall,
        hops=len(outcome.results), retries=outcome.retries, utilization=outcome.utilization,
        failed_models=outcome.failed_models, leaderboard=board, pack_reused=pack.reused,
    )


async def install(dsn: str, python_path: list[str] | None = None) -> str:
    async with connect(dsn) as conn:
        await catalog.install(conn, python_path)
        return await catalog.installed_sha(conn)


async def runs(dsn: str, limit: int = 50) -> list[dict]:
    async with connect(dsn) as conn:
        return await catalog.list_runs(conn, limit)


async def models(dsn: str, run_id: int) -> list[dict]:
    async with connect(dsn) as conn:
        if await catalog.installed_sha(conn) is None or await catalog.get_run(conn, run_id) is None:
            raise NotFound(f"no run with id {run_id}")
        return await catalog.leaderboard(conn, run_id)

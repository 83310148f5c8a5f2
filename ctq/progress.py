"""Live progress of a run on a terminal (rich): what each segment does, each model's epochs, the best.

Only used when stdout is a TTY and ``--json`` is off; cron jobs and pipes get no live display.
"""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ctq.coordinator import HopResult
from ctq.scheduler import Hop

MAX_MODEL_ROWS = 20


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class LiveProgress:
    """Implements the coordinator's Progress protocol on top of a rich Live display."""

    def __init__(self, plan, console: Console | None = None):
        """``plan`` is the run's :class:`ctq.api.RunPlan` (a resumed run starts where it stopped)."""
        self.run_id = plan.run_id
        self.config = plan
        self.segments = plan.segments
        self.names = dict(plan.models)
        self.epochs_done = {m: 0 for m in plan.models}
        self.hops_in_epoch = {m: 0 for m in plan.models}
        for (model_id, epoch), hops in Counter((m, e) for m, e, _ in plan.completed).items():
            if hops == plan.segments:
                self.epochs_done[model_id] = max(self.epochs_done[model_id], epoch + 1)
            else:
                self.hops_in_epoch[model_id] = hops
        self.score: dict[int, float] = {}
        self.failed: dict[int, str] = {m: "earlier session" for m in plan.failed}
        self.busy: dict[int, tuple[Hop, float]] = {}
        self.hops = len(plan.completed)
        self.started = time.monotonic()
        self.live = Live(self._render(), console=console or Console(), refresh_per_second=4, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self._render())
        return self.live.__exit__(*exc)

    # -- Progress protocol
    def hop_started(self, hop: Hop) -> None:
        self.busy[hop.segment] = (hop, time.monotonic())
        self.live.update(self._render())

    def hop_finished(self, result: HopResult) -> None:
        hop = result.hop
        self.busy.pop(hop.segment, None)
        self.hops += 1
        self.hops_in_epoch[hop.model_id] += 1
        if hop.last_of_epoch:
            self.epochs_done[hop.model_id] = hop.epoch + 1
            self.hops_in_epoch[hop.model_id] = 0
            score = self._score(result)
            if score is not None:
                self.score[hop.model_id] = score
        self.live.update(self._render())

    def hop_retried(self, hop: Hop, reason: str) -> None:
        self.busy.pop(hop.segment, None)
        self.live.console.print(f"[yellow]retrying model {hop.model_id} on segment {hop.segment}: {reason}")

    def model_failed(self, model_id: int, reason: str) -> None:
        self.failed[model_id] = reason
        self.live.console.print(f"[red]model {self.names.get(model_id, model_id)} failed: {reason}")
        self.live.update(self._render())

    # -- rendering
    def _score(self, result: HopResult) -> float | None:
        return {
            "val_loss": result.val_loss, "val_accuracy": result.val_metric, "val_mae": result.val_metric,
            "loss": result.loss, "accuracy": result.metric, "mae": result.metric,
        }.get(self.config.metric)

    def _best(self) -> tuple[int, float] | None:
        if not self.score:
            return None
        pick = max if self.config.metric_mode == "max" else min
        model_id = pick(self.score, key=self.score.__getitem__)
        return model_id, self.score[model_id]

    def _render(self):
        total_hops = len(self.names) * self.segments * self.config.epochs
        elapsed = time.monotonic() - self.started
        best = self._best()
        head = Text.assemble(
            (f"run {self.run_id} ", "bold"), f"{self.config.name}: {self.hops}/{total_hops} hops, ",
            f"{elapsed:.0f}s, best {self.config.metric} = ",
            (f"{best[1]:.4f} ({self.names[best[0]]})" if best else "-", "bold green"),
        )
        segs = Table(box=None, show_header=True, header_style="dim")
        segs.add_column("segment")
        segs.add_column("training")
        segs.add_column("for")
        for s in range(self.segments):
            if s in self.busy:
                hop, since = self.busy[s]
                segs.add_row(str(s), f"{self.names[hop.model_id]} (epoch {hop.epoch + 1})",
                             f"{time.monotonic() - since:.1f}s")
            else:
                segs.add_row(str(s), "[dim]idle", "")
        models = Table(box=None, show_header=True, header_style="dim")
        for col in ("model", "epochs", self.config.metric):
            models.add_column(col)
        order = sorted(self.names, key=lambda m: (m not in self.score, -self.score.get(m, 0)
                                                  if self.config.metric_mode == "max" else self.score.get(m, 0)))
        for model_id in order[:MAX_MODEL_ROWS]:
            done = self.epochs_done[model_id]
            status = "[red]failed" if model_id in self.failed else (
                f"{done}/{self.config.epochs}" + (f" +{self.hops_in_epoch[model_id]}/{self.segments}"
                                                  if self.hops_in_epoch[model_id] else ""))
            models.add_row(self.names[model_id], status, _fmt(self.score.get(model_id)))
        if len(order) > MAX_MODEL_ROWS:
            models.add_row(f"... {len(order) - MAX_MODEL_ROWS} more", "", "")
        return Group(head, segs, models)

"""The run's ranking metric (grid.yaml ``metric``): the one place the client maps a metric's name to
its direction, the catalog column that holds it and the metric the hops compute.

Search decisions (ASHA, Hyperband, TPE), the progress display, the report and scoring all read the
run's metric through :class:`Metric`, so that they cannot drift from each other or from the
leaderboard view (``ctq.leaderboard`` in sql_templates/common/install.sql ranks on the same column;
tests/test_search.py checks the two agree for every name). Which metric a model is compiled with
is ctq.rules.compiled_metric, the rule the server (ctq.indb) follows too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctq.rules import RANKING_KINDS, compiled_metric

__all__ = ["Metric", "row_metric", "METRICS", "MAX_METRICS", "MAE_METRICS", "CLASSIFICATION_METRICS", "RANKING_KINDS"]

# A metric's kind (accuracy, auc, ...) is what ctq.indb compiles into the model; the val_ form is
# computed on the validation rows, in the database, after every epoch.
CLASSIFICATION_METRICS = ("accuracy", "auc", "f1", "precision", "recall")
METRICS = ("val_loss", "val_accuracy", "val_auc", "val_f1", "val_precision", "val_recall", "val_mae",
           "loss", "accuracy", "auc", "f1", "precision", "recall", "mae")
MAX_METRICS = frozenset(METRICS) - {"val_loss", "loss", "val_mae", "mae"}  # classification only; max is best
MAE_METRICS = frozenset({"val_mae", "mae"})


def row_metric(task: str) -> str:
    """The mean-over-rows metric of a ``task``: accuracy (classification) or mae (regression)."""
    return compiled_metric(task)


@dataclass(frozen=True)
class Metric:
    """A run's metric by its grid.yaml name (one of :data:`METRICS`)."""

    name: str

    def __post_init__(self):
        if self.name not in METRICS:
            raise ValueError(f"unknown metric {self.name!r} (one of {', '.join(METRICS)})")

    @property
    def mode(self) -> str:
        """``max`` when higher is better, else ``min``."""
        return "max" if self.name in MAX_METRICS else "min"

    @property
    def validation(self) -> bool:
        """Computed on the validation rows (``val_...``), not the training rows."""
        return self.name.startswith("val_")

    @property
    def kind(self) -> str:
        """The name without ``val_``: loss, accuracy, auc, f1, precision, recall or mae."""
        return self.name.removeprefix("val_")

    @property
    def column(self) -> str:
        """The ctq.epochs / ctq.models column that holds the metric (the leaderboard's score)."""
        if self.kind == "loss":
            return "val_loss" if self.validation else "train_loss"
        return "val_metric" if self.validation else "train_metric"

    def value(self, row) -> float | None:
        """The metric from a ctq.epochs or ctq.models row (a mapping with :attr:`column`)."""
        return row[self.column]

    def compiled(self, task: str) -> str:
        """The metric the hops compute into train_metric / val_metric for a ``task`` run: the
        ranking kind itself (auc, f1, precision, recall), else accuracy (classification) or mae."""
        return compiled_metric(task, self.kind)

    def ranking(self, task: str) -> str | None:
        """The ranking kind (auc, f1, precision, recall) a ``task`` run compiles, else None."""
        kind = self.compiled(task)
        return kind if kind in RANKING_KINDS else None

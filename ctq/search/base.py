"""The base of a search method (Optuna's samplers and pruners are the model: a tiny base, one file
per method). A method is a subclass of :class:`Search` in its own module of this package, named in
:data:`ctq.search.METHODS`; the configuration, the API and the coordinator know no method by name.

Pure logic, no I/O: a search's state is rebuilt from ctq's catalog (:meth:`Search.restore`), which
stays the record of what happened (``ctq.models``, ``ctq.decisions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ctq.api import RunPlan


def _optuna():
    """Optuna, imported on first use (about half a second), with its INFO logging silenced: a
    study per run is an implementation detail, not news for the user's terminal."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


MAX_MODELS = 10_000  # the most models a search may have

Point = tuple  # a configuration: (architecture index, optimizer, learning rate, batch size, momentum or None)


@dataclass(frozen=True)
class Decision:
    """An early-stopping decision on one model at one rung, as ``ctq.decisions`` records it."""

    model_id: int
    rung: int  # 0-based
    epoch: int  # epochs the model had completed (1-based count): the rung's resource
    value: float  # the run's metric after that epoch
    promoted: bool  # False: stopped, it trains no more
    reason: str


class Search:
    """One search method: which models a run trains, and what it decides while they train.

    The class attributes say what the method reads from grid.yaml's ``search:``; the methods are
    the moments a run asks it something. The defaults are a search that decides nothing during the
    run (grid, random).
    """

    method: ClassVar[str]  # search.method in grid.yaml
    takes_samples: ClassVar[str] = "optional"  # search.samples: "never", "optional" (draws, not the grid), "required"
    samples_are: ClassVar[str] = ""  # what search.samples counts, where it is required
    early_stopping: ClassVar[bool] = False  # reads grace_period, reduction_factor, max_epochs; decides after epochs
    asks_during_run: ClassVar[bool] = False  # its models are asked during the run, not known before

    @classmethod
    def initial_points(cls, space: dict[str, Any], architectures: int, samples: int | None, seed: int,
                       momentum_users: frozenset[str]) -> list[Point]:
        """The configurations known before the run, in model order (``space`` as
        :attr:`ctq.config.RunConfig.space`). ValueError: too many (its message says so)."""
        raise NotImplementedError

    @classmethod
    def restore(cls, plan: RunPlan) -> Search:
        """This run's search in the state the catalog's history leaves it (``plan``: the run as
        read back from the catalog). ValueError when that history is not what the rule decides."""
        return cls()

    def undecided(self, plan: RunPlan) -> list[tuple[int, int]]:
        """(model_id, epoch count) results that a dead coordinator left without their decision,
        in the order they finished: decided first."""
        return []

    def decide(self, model_id: int, epoch: int, value: float | None) -> Decision | None:
        """``model_id`` has completed ``epoch`` epochs with the run's metric at ``value``: a
        decision, or None (nothing to decide now). Asked only of an :attr:`early_stopping` search."""
        return None

    def new_models(self, live: int, next_id: int) -> list[tuple[int, Point]]:
        """The models to add now, numbered from ``next_id``, with ``live`` models still training:
        at the start of a coordinator session and after a model ended (:meth:`model_ended`)."""
        return []

    def model_ended(self, model_id: int, value: float | None) -> None:
        """``model_id`` trained its last epoch with the run's metric at ``value``, or failed (None).
        Told only by an :attr:`asks_during_run` search."""

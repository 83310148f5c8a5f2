"""Search decisions over Optuna's ask-and-tell interface: random draws and asynchronous successive
halving (ASHA). Pure logic, no I/O: Optuna's storage lives in memory and is rebuilt from ctq's
catalog, which stays the record of what happened (``ctq.decisions``).

Sampling and pruning are not what ctq exists for, so they are Optuna's (a well-kept library):
:func:`random_points` draws with :class:`optuna.samplers.RandomSampler`, and :class:`Asha` asks
:class:`optuna.pruners.SuccessiveHalvingPruner` at every rung.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Decision", "Asha", "random_points", "rung_epochs"]


def _optuna():
    """Optuna, imported on first use (about half a second), with its INFO logging silenced: a
    study per run is an implementation detail, not news for the user's terminal."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def random_points(space: dict[str, Any], architectures: int, samples: int, seed: int,
                  momentum_users: frozenset[str]) -> list[tuple[int, str, float, int, float | None]]:
    """``samples`` draws of (architecture index, optimizer, learning rate, batch size, momentum).

    ``space`` maps optimizer, learning_rate, batch_size and momentum to a list of values (a uniform
    choice) or a range ``{"low", "high", "log", "integer"}`` (uniform, or log-uniform with ``log``;
    integers for ``integer``). The architecture is a uniform choice. Momentum is drawn only for an
    optimizer in ``momentum_users`` (else None). Reproducible from ``seed``: Optuna's
    RandomSampler, asked define-by-run, one trial per draw.
    """
    optuna = _optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))

    def suggest(trial, name: str, spec):
        if isinstance(spec, list):
            return trial.suggest_categorical(name, spec)
        if spec["integer"]:
            return trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=spec["log"])
        return trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])

    points = []
    for _ in range(samples):
        trial = study.ask()
        arch = trial.suggest_categorical("architecture", list(range(architectures)))
        opt = suggest(trial, "optimizer", space["optimizer"])
        lr = suggest(trial, "learning_rate", space["learning_rate"])
        bs = suggest(trial, "batch_size", space["batch_size"])
        mom = None
        if "momentum" in space and opt in momentum_users:
            mom = float(suggest(trial, "momentum", space["momentum"]))
        points.append((int(arch), opt, float(lr), int(bs), mom))
    return points


def rung_epochs(grace_period: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """The epochs after which ASHA decides: ``grace_period * reduction_factor**k`` below
    ``max_epochs`` (a model that reaches ``max_epochs`` is done, there is nothing to decide)."""
    rungs, r = [], grace_period
    while r < max_epochs:
        rungs.append(r)
        r *= reduction_factor
    return tuple(rungs)


@dataclass(frozen=True)
class Decision:
    """ASHA's decision on one model at one rung, as ``ctq.decisions`` records it."""

    model_id: int
    rung: int  # 0-based
    epoch: int  # epochs the model had completed (1-based count): the rung's resource
    value: float  # the run's metric after that epoch
    promoted: bool  # False: stopped, it trains no more
    reason: str


class Asha:
    """Asynchronous successive halving on top of MOP (Li et al., "A System for Massively Parallel
    Hyperparameter Tuning", MLSys 2020), with Optuna's :class:`SuccessiveHalvingPruner` semantics.

    Rung ``k`` is after epoch ``grace_period * reduction_factor**k`` (below ``max_epochs``). When a
    model completes a rung's epoch it is compared at once with every result recorded at that rung so
    far, its own included (``n`` of them): it is promoted if it ranks within the best
    ``max(1, n // reduction_factor)``, else stopped; nobody waits for a cohort. This is Optuna's rule:
    unlike the paper's ASHA, which promotes a paused configuration later when enough results
    arrive, a model is never paused (MOP keeps it in memory of no worker), so the first
    ``reduction_factor - 1`` results at a rung are promoted when they are the best so far.

    Decisions depend on the order in which results arrive; :meth:`decide` must see them in that
    order, which is why the catalog numbers them (``seq``) and :meth:`replay` rebuilds the state
    on a resume by deciding again, in that order, checking that each decision comes out the same.
    """

    def __init__(self, grace_period: int, reduction_factor: int, max_epochs: int, mode: str):
        if grace_period < 1 or max_epochs < 1 or reduction_factor < 2:
            raise ValueError("grace_period and max_epochs must be >= 1 and reduction_factor >= 2, got "
                             f"{grace_period}, {max_epochs} and {reduction_factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        optuna = _optuna()
        self.rungs = rung_epochs(grace_period, reduction_factor, max_epochs)
        self.reduction_factor = reduction_factor
        self.mode = mode
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=grace_period, reduction_factor=reduction_factor, min_early_stopping_rate=0)
        self._study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                          pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
        self._trials: dict[int, Any] = {}  # model_id -> its Optuna trial
        self._reported: set[tuple[int, int]] = set()  # (model_id, epoch) results seen
        self._at_rung: list[list[float]] = [[] for _ in self.rungs]  # results so far, per rung

    def decide(self, model_id: int, epoch: int, value: float | None) -> Decision | None:
        """``model_id`` has completed ``epoch`` epochs with the run's metric at ``value`` (None or
        NaN: a model without a result, stopped). A decision when ``epoch`` is a rung, else None.
        Raises ValueError for a second result of a model at the same rung."""
        if epoch not in self.rungs:
            return None
        rung = self.rungs.index(epoch)
        trial = self._trials.get(model_id)
        if trial is None:
            trial = self._trials[model_id] = self._study.ask()
        if (model_id, epoch) in self._reported:
            raise ValueError(f"model {model_id} already has a result at rung {rung} (epoch {epoch})")
        self._reported.add((model_id, epoch))
        value = math.nan if value is None else float(value)
        trial.report(value, epoch)
        promoted = not trial.should_prune()
        results = self._at_rung[rung]
        if math.isnan(value):
            reason = f"no finite metric after epoch {epoch}"
        else:
            results.append(value)
            better = sum((v > value) if self.mode == "max" else (v < value) for v in results)
            keep = max(1, len(results) // self.reduction_factor)
            reason = (f"rank {better + 1} of {len(results)} results at rung {rung} (epoch {epoch}); "
                      f"the best {keep} go on")
        if not promoted:
            self._study.tell(trial, state=_optuna().trial.TrialState.PRUNED)
        return Decision(model_id, rung, epoch, value, promoted, reason)

    def replay(self, decisions: Iterable[Decision]) -> None:
        """Rebuild the state from recorded decisions (in the order they were made). Raises
        ValueError if the rule, given the same results in that order, decides otherwise: the
        catalog and this rule disagree, and going on would not be the run that was started."""
        for d in decisions:
            again = self.decide(d.model_id, d.epoch, d.value)
            if again is None or again.promoted != d.promoted:
                raise ValueError(f"recorded decision on model {d.model_id} at epoch {d.epoch} "
                                 f"({'promote' if d.promoted else 'stop'}) is not what ASHA decides now")


def metric_value(metric: str, epoch_row: dict) -> float | None:
    """The run's ``metric`` from a ``ctq.epochs`` row (as the leaderboard's score reads it)."""
    column = {"val_loss": "val_loss", "loss": "train_loss", "val_accuracy": "val_metric",
              "val_mae": "val_metric"}.get(metric, "train_metric")
    return epoch_row[column]


def pending(rungs: Sequence[int], epochs: Iterable[tuple[int, int]], decided: Iterable[tuple[int, int]],
            stopped: Iterable[int]) -> list[tuple[int, int]]:
    """(model_id, epoch) results at rungs that have no decision yet (a coordinator died between
    the epoch's last hop and its decision), in the order given (``epochs``: completed
    (model_id, epoch count), in the order they finished); a stopped model has none pending."""
    done, out_of_search = set(decided), set(stopped)
    return [(m, e) for m, e in epochs if e in rungs and (m, e) not in done and m not in out_of_search]

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

__all__ = ["Decision", "Asha", "Tpe", "random_points", "rung_epochs"]


def _optuna():
    """Optuna, imported on first use (about half a second), with its INFO logging silenced: a
    study per run is an implementation detail, not news for the user's terminal."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


INTEGER_PARAMETERS = frozenset({"batch_size"})  # a range of these draws integers


def _draw(trial, space: dict[str, Any], architectures: int, momentum_users: frozenset[str]) -> tuple:
    """One configuration, asked define-by-run of an Optuna trial: (architecture index, optimizer,
    learning rate, batch size, momentum or None). ``space`` as :attr:`ctq.config.RunConfig.space`:
    a list is a choice, ``{"low", "high", "log"}`` a range (log-uniform with ``log``; integers for
    batch_size). Momentum is asked only of an optimizer in ``momentum_users``."""

    def suggest(name: str):
        spec = space[name]
        if isinstance(spec, list):
            return trial.suggest_categorical(name, spec)
        if name in INTEGER_PARAMETERS:
            return trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=spec["log"])
        return trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])

    arch = trial.suggest_categorical("architecture", list(range(architectures)))
    opt, lr, bs = suggest("optimizer"), suggest("learning_rate"), suggest("batch_size")
    mom = float(suggest("momentum")) if "momentum" in space and opt in momentum_users else None
    return int(arch), opt, float(lr), int(bs), mom


def random_points(space: dict[str, Any], architectures: int, samples: int, seed: int,
                  momentum_users: frozenset[str]) -> list[tuple[int, str, float, int, float | None]]:
    """``samples`` draws of (architecture index, optimizer, learning rate, batch size, momentum)
    from ``space`` (see :func:`_draw`); the architecture is a uniform choice. Reproducible from
    ``seed``: Optuna's RandomSampler, one trial per draw."""
    optuna = _optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [_draw(study.ask(), space, architectures, momentum_users) for _ in range(samples)]


class Tpe:
    """Bayesian search by Optuna's TPE sampler (Bergstra et al., "Algorithms for Hyper-Parameter
    Optimization", NeurIPS 2011) that asks for a configuration whenever a slot frees up.

    At most ``concurrency`` models train at once (one per segment keeps MOP's segments busy);
    when one finishes, its final metric is told (:meth:`tell`) and :meth:`due` says how many to
    ask, until ``samples`` have been asked. Each ask is a pure function of (``seed``, the ask's
    number, the results told so far in their order): a study is rebuilt from those results with a
    sampler seeded for that ask. So a resumed run, which tells the catalog's results again in the
    order the models finished, asks what the run would have asked without the crash (the asks a
    dead coordinator left undone see every result recorded by then).
    """

    def __init__(self, space: dict[str, Any], architectures: int, samples: int, seed: int, mode: str,
                 concurrency: int, momentum_users: frozenset[str]):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if samples < 1 or concurrency < 1 or architectures < 1:
            raise ValueError("samples, concurrency and architectures must be >= 1")
        self.space, self.architectures, self.samples, self.seed = space, architectures, samples, seed
        self.mode, self.concurrency, self.momentum_users = mode, concurrency, momentum_users
        self.asked = 0
        self._told: list[tuple[dict, float | None]] = []

    @staticmethod
    def params(point: tuple) -> dict:
        """Optuna's parameters of a configuration (architecture index, optimizer, lr, batch, momentum)."""
        arch, opt, lr, bs, mom = point
        out = {"architecture": arch, "optimizer": opt, "learning_rate": lr, "batch_size": bs}
        return out if mom is None else {**out, "momentum": mom}

    def tell(self, point: tuple, value: float | None) -> None:
        """A model of configuration ``point`` finished with the run's metric at ``value`` (None or
        NaN: it failed, and TPE learns nothing from it)."""
        ok = value is not None and math.isfinite(value)
        self._told.append((self.params(point), float(value) if ok else None))

    def due(self, live: int) -> int:
        """How many configurations to ask now, with ``live`` models still training."""
        return max(0, min(self.concurrency - live, self.samples - self.asked))

    def ask(self) -> tuple:
        """The next configuration (see :func:`_draw`)."""
        optuna = _optuna()
        dist = optuna.distributions

        def distribution(name: str):
            if name == "architecture":
                return dist.CategoricalDistribution(list(range(self.architectures)))
            spec = self.space[name]
            if isinstance(spec, list):
                return dist.CategoricalDistribution(spec)
            if name in INTEGER_PARAMETERS:
                return dist.IntDistribution(int(spec["low"]), int(spec["high"]), log=spec["log"])
            return dist.FloatDistribution(spec["low"], spec["high"], log=spec["log"])

        sampler = optuna.samplers.TPESampler(seed=(self.seed * 1_000_003 + self.asked) % 2**32)
        study = optuna.create_study(direction="maximize" if self.mode == "max" else "minimize", sampler=sampler)
        for params, value in self._told:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: distribution(k) for k in params}, value=value,
                state=optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL))
        point = _draw(study.ask(), self.space, self.architectures, self.momentum_users)
        self.asked += 1
        return point


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

"""Asynchronous successive halving (ASHA) over Optuna's SuccessiveHalvingPruner: models are
stopped early at rungs, each decision recorded in ``ctq.decisions`` and replayed on a resume."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ctq.search.base import Decision, Search, _optuna
from ctq.search.grid import Grid
from ctq.search.random import Random


def rung_epochs(grace_period: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """The epochs after which ASHA decides: ``grace_period * reduction_factor**k`` below
    ``max_epochs`` (a model that reaches ``max_epochs`` is done, there is nothing to decide)."""
    rungs, r = [], grace_period
    while r < max_epochs:
        rungs.append(r)
        r *= reduction_factor
    return tuple(rungs)


class Asha(Search):
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
    Model ``m`` (ctq numbers a run's models 1..N) is trial number ``m - 1`` of an Optuna study
    named ``ctq-seed-<seed>``, whatever the order of the decisions, so that a rule that depends on
    the trial (:class:`Hyperband`'s brackets) sees the same trials on a resume. The pruner decides;
    the rank that the decision's reason gives is ctq's reading of what it compared, and a pruner
    that decides otherwise raises RuntimeError (a reason that misstates a decision is worse than
    no run).
    """

    method = "asha"
    early_stopping = True
    name = "ASHA"  # who stopped a model, in its ctq.models message

    def __init__(self, grace_period: int, reduction_factor: int, max_epochs: int, mode: str, seed: int = 0):
        if grace_period < 1 or max_epochs < 1 or reduction_factor < 2:
            raise ValueError("grace_period and max_epochs must be >= 1 and reduction_factor >= 2, got "
                             f"{grace_period}, {max_epochs} and {reduction_factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        optuna = _optuna()
        self.rungs = rung_epochs(grace_period, reduction_factor, max_epochs)
        self.reduction_factor = reduction_factor
        self.mode = mode
        self._study = optuna.create_study(study_name=f"ctq-seed-{seed}",
                                          direction="maximize" if mode == "max" else "minimize",
                                          pruner=self._pruner(grace_period, reduction_factor, max_epochs),
                                          sampler=optuna.samplers.RandomSampler(seed=0))
        self._trials: list[Any] = []  # Optuna's trial number n is model n + 1's
        self._reported: set[tuple[int, int]] = set()  # (model_id, epoch) results seen
        self._results: dict[tuple[int, int], list[float]] = {}  # (bracket, rung) -> finite results so far

    @classmethod
    def initial_points(cls, space, architectures, samples, seed, momentum_users):
        """The grid, or ``samples`` random draws."""
        source = Grid if samples is None else Random
        return source.initial_points(space, architectures, samples, seed, momentum_users)

    @classmethod
    def restore(cls, plan) -> Asha:
        """In the state its recorded decisions leave it (:meth:`replay`); ``plan.search`` holds
        grace_period and reduction_factor, max_epochs is the run's epochs."""
        search = cls(plan.search.get("grace_period") or 1, plan.search.get("reduction_factor") or 3, plan.epochs,
                     plan.metric_mode, plan.seed)
        search.replay(plan.decisions)
        return search

    def undecided(self, plan) -> list[tuple[int, int]]:
        return pending(self.model_rungs, plan.epochs_done, [(d.model_id, d.epoch) for d in plan.decisions],
                       plan.stopped | plan.failed)

    @staticmethod
    def _pruner(grace_period: int, reduction_factor: int, max_epochs: int):
        return _optuna().pruners.SuccessiveHalvingPruner(
            min_resource=grace_period, reduction_factor=reduction_factor, min_early_stopping_rate=0)

    def bracket(self, model_id: int) -> int:
        """The bracket of ``model_id``, whose first rung is rung number ``bracket``: ASHA is one
        bracket, 0, from the first rung on."""
        return 0

    def _among(self, bracket: int) -> str:
        """The results a model is ranked among, as its decision's reason names them."""
        return "results"

    def model_rungs(self, model_id: int) -> tuple[int, ...]:
        """The epochs after which ``model_id`` is decided on: the rungs from its bracket's first."""
        return self.rungs[self.bracket(model_id):]

    def _trial(self, model_id: int):
        if model_id < 1:
            raise ValueError(f"model ids start at 1, got {model_id}")
        while len(self._trials) < model_id:
            self._trials.append(self._study.ask())
        return self._trials[model_id - 1]

    def decide(self, model_id: int, epoch: int, value: float | None) -> Decision | None:
        """``model_id`` has completed ``epoch`` epochs with the run's metric at ``value`` (None or
        NaN: a model without a result, stopped). A decision when ``epoch`` is one of the model's
        rungs (:meth:`model_rungs`), else None. Raises ValueError for a second result of a model at
        the same rung or one that skips an earlier rung of the model (Optuna's pruner counts a
        trial's rungs by the results it was given, so it would compare it at the earlier rung),
        RuntimeError when Optuna's pruner decides against the rank it compared."""
        bracket = self.bracket(model_id)
        if epoch not in self.rungs[bracket:]:
            return None
        rung = self.rungs.index(epoch)
        if (model_id, epoch) in self._reported:
            raise ValueError(f"model {model_id} already has a result at rung {rung} (epoch {epoch})")
        skipped = [e for e in self.rungs[bracket:rung] if (model_id, e) not in self._reported]
        if skipped:
            raise ValueError(f"model {model_id} has no result at epoch {skipped[0]}, a rung before epoch {epoch}")
        trial = self._trial(model_id)
        self._reported.add((model_id, epoch))
        value = math.nan if value is None else float(value)
        trial.report(value, epoch)
        promoted = not trial.should_prune()
        if math.isnan(value):
            reason, ranked_in = f"no finite metric after epoch {epoch}", False
        else:
            results = self._results.setdefault((bracket, rung), [])
            results.append(value)
            better = sum((v > value) if self.mode == "max" else (v < value) for v in results)
            keep = max(1, len(results) // self.reduction_factor)
            ranked_in = better < keep
            reason = (f"rank {better + 1} of {len(results)} {self._among(bracket)} at rung {rung} "
                      f"(epoch {epoch}); the best {keep} go on")
        if promoted != ranked_in:
            raise RuntimeError(f"Optuna's {type(self._study.pruner).__name__} "
                               f"{'promoted' if promoted else 'stopped'} model {model_id} at epoch {epoch} "
                               f"against the rank it compared ({reason})")
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
                                 f"({'promote' if d.promoted else 'stop'}) is not what {self.name} decides now")


def pending(rungs: Callable[[int], Sequence[int]], epochs: Iterable[tuple[int, int]],
            decided: Iterable[tuple[int, int]], stopped: Iterable[int]) -> list[tuple[int, int]]:
    """(model_id, epoch) results at a model's rungs (``rungs(model_id)``: the epochs it is decided
    after, :meth:`Asha.model_rungs`) that have no decision yet (a coordinator died between the
    epoch's last hop and its decision), in the order given (``epochs``: completed (model_id, epoch
    count), in the order they finished); a stopped model has none pending."""
    done, out_of_search = set(decided), set(stopped)
    return [(m, e) for m, e in epochs if e in rungs(m) and (m, e) not in done and m not in out_of_search]

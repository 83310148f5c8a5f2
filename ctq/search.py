"""Search decisions over Optuna's ask-and-tell interface: random draws, asynchronous successive
halving (ASHA) and Hyperband. Pure logic, no I/O: Optuna's storage lives in memory and is rebuilt
from ctq's catalog, which stays the record of what happened (``ctq.decisions``).

Sampling and pruning are not what ctq exists for, so they are Optuna's (a well-kept library):
:func:`random_points` draws with :class:`optuna.samplers.RandomSampler`, :class:`Asha` asks
:class:`optuna.pruners.SuccessiveHalvingPruner` at every rung and :class:`Hyperband`
:class:`optuna.pruners.HyperbandPruner`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Decision", "Asha", "Hyperband", "Tpe", "random_points", "rung_epochs"]


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
    Model ``m`` (ctq numbers a run's models 1..N) is trial number ``m - 1`` of an Optuna study
    named ``ctq-seed-<seed>``, whatever the order of the decisions, so that a rule that depends on
    the trial (:class:`Hyperband`'s brackets) sees the same trials on a resume. The pruner decides;
    the rank that the decision's reason gives is ctq's reading of what it compared, and a pruner
    that decides otherwise raises RuntimeError (a reason that misstates a decision is worse than
    no run).
    """

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


class Hyperband(Asha):
    """Hyperband (Li et al., "Hyperband: A Novel Bandit-Based Approach to Hyperparameter
    Optimization", JMLR 2018) as Optuna's :class:`HyperbandPruner` runs it: brackets of
    asynchronous successive halving (:class:`Asha`) that start stopping models at different epochs.

    There are ``n = floor(log_reduction_factor(max_epochs / grace_period)) + 1`` brackets (Optuna
    computes it in floating point, and so does this). Bracket ``b`` is Optuna's
    :class:`SuccessiveHalvingPruner` with ``min_early_stopping_rate = b``: its first rung is rung
    ``b``, after epoch ``grace_period * reduction_factor**b`` (a model of bracket ``b`` is never
    stopped before it), and at a rung a model is ranked among the results of its bracket only.
    When ``max_epochs`` is ``grace_period * reduction_factor**(n - 1)`` the last bracket has no
    rung: its models train to ``max_epochs``, the paper's bracket of plain random search.

    Model ``m`` is in the bracket Optuna gives trial number ``m - 1`` of the study
    ``ctq-seed-<seed>`` (optuna/pruners/_hyperband.py, ``_get_bracket_id``): bracket ``b`` has a
    trial budget ``ceil(n * reduction_factor**s / (s + 1))`` with ``s = n - 1 - b``, and a trial
    falls in the bracket whose share of the budgets' sum holds ``crc32("<study>_<number>")`` modulo
    that sum. ctq computes it the same way to know a model's rungs before Optuna is asked and to
    name its bracket; Optuna's decisions are checked against that bracket's ranking at every rung
    (:meth:`Asha.decide`), and tests/test_search.py checks the assignment against Optuna's own.
    The assignment depends on the seed and the model's number only: a resume gets the same.
    """

    name = "Hyperband"

    def __init__(self, grace_period: int, reduction_factor: int, max_epochs: int, mode: str, seed: int):
        if max_epochs < grace_period:
            raise ValueError(f"max_epochs ({max_epochs}) is below grace_period ({grace_period})")
        super().__init__(grace_period, reduction_factor, max_epochs, mode, seed)
        n = math.floor(math.log(max_epochs / grace_period, reduction_factor)) + 1
        # the brackets' cumulative trial budgets: bracket b holds the shares [ends[b-1], ends[b])
        self._ends = tuple(itertools.accumulate(
            math.ceil(n * reduction_factor**(n - 1 - b) / (n - b)) for b in range(n)))

    @staticmethod
    def _pruner(grace_period: int, reduction_factor: int, max_epochs: int):
        return _optuna().pruners.HyperbandPruner(
            min_resource=grace_period, max_resource=max_epochs, reduction_factor=reduction_factor)

    @property
    def brackets(self) -> int:
        """How many brackets there are."""
        return len(self._ends)

    def bracket(self, model_id: int) -> int:
        """Optuna's bracket (0 .. brackets - 1) of trial ``model_id - 1`` of this study (see above)."""
        share = zlib.crc32(f"{self._study.study_name}_{model_id - 1}".encode()) % self._ends[-1]
        return bisect.bisect_right(self._ends, share)

    def _among(self, bracket: int) -> str:
        return f"results of bracket {bracket}"


def pending(rungs: Callable[[int], Sequence[int]], epochs: Iterable[tuple[int, int]],
            decided: Iterable[tuple[int, int]], stopped: Iterable[int]) -> list[tuple[int, int]]:
    """(model_id, epoch) results at a model's rungs (``rungs(model_id)``: the epochs it is decided
    after, :meth:`Asha.model_rungs`) that have no decision yet (a coordinator died between the
    epoch's last hop and its decision), in the order given (``epochs``: completed (model_id, epoch
    count), in the order they finished); a stopped model has none pending."""
    done, out_of_search = set(decided), set(stopped)
    return [(m, e) for m, e in epochs if e in rungs(m) and (m, e) not in done and m not in out_of_search]

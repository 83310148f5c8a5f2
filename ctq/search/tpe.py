"""Bayesian search by Optuna's TPE sampler, asking for a configuration whenever a slot frees up."""

from __future__ import annotations

import math
from typing import Any

from ctq.search.base import Point, Search, _optuna
from ctq.search.random import INTEGER_PARAMETERS, draw


class Tpe(Search):
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

    method = "tpe"
    takes_samples = "required"
    samples_are = "how many models to try"
    asks_during_run = True

    def __init__(self, space: dict[str, Any], architectures: int, samples: int, seed: int, mode: str,
                 concurrency: int, momentum_users: frozenset[str]):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if samples < 1 or concurrency < 1 or architectures < 1:
            raise ValueError("samples, concurrency and architectures must be >= 1")
        self.space, self.architectures, self.samples, self.seed = space, architectures, samples, seed
        self.mode, self.concurrency, self.momentum_users = mode, concurrency, momentum_users
        self.asked = 0
        self.points: dict[int, Point] = {}  # model_id -> its configuration
        self._told: list[tuple[dict, float | None]] = []

    @classmethod
    def initial_points(cls, space, architectures, samples, seed, momentum_users):
        return []  # asked during the run

    @classmethod
    def restore(cls, plan) -> Tpe:
        """Told the finished models' results in the order they finished, with every model's
        configuration so far (``plan.search``: samples, space and architectures as the run recorded
        them)."""
        from ctq.rules import MOMENTUM_OPTIMIZERS

        archs = [a["spec"] for a in plan.search["architectures"]]
        tpe = cls(plan.search["space"], len(archs), plan.search["samples"], plan.seed, plan.metric_mode,
                  plan.segments, MOMENTUM_OPTIMIZERS)
        for model_id, spec in plan.specs.items():
            h = spec.hyperparameters
            tpe.points[model_id] = (archs.index(spec.architecture), h.optimizer, h.learning_rate, h.batch_size,
                                    h.momentum)
        tpe.asked = len(tpe.points)
        for model_id, value in plan.finished:
            tpe.tell(tpe.points[model_id], value)
        return tpe

    def new_models(self, live: int, next_id: int) -> list[tuple[int, Point]]:
        out = []
        for model_id in range(next_id, next_id + self.due(live)):
            self.points[model_id] = self.ask()
            out.append((model_id, self.points[model_id]))
        return out

    def model_ended(self, model_id: int, value: float | None) -> None:
        self.tell(self.points[model_id], value)

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
        """The next configuration (see :func:`ctq.search.random.draw`)."""
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
        point = draw(study.ask(), self.space, self.architectures, self.momentum_users)
        self.asked += 1
        return point

"""Random search: ``samples`` draws of the search space by Optuna's RandomSampler."""

from __future__ import annotations

from typing import Any

from ctq.search.base import Point, Search, _optuna

INTEGER_PARAMETERS = frozenset({"batch_size"})  # a range of these draws integers


def draw(trial, space: dict[str, Any], architectures: int, momentum_users: frozenset[str]) -> Point:
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


ASKS_PER_SAMPLE = 50  # random_points gives up past this many draws a sample (a nearly exhausted space)


def random_points(space: dict[str, Any], architectures: int, samples: int, seed: int,
                  momentum_users: frozenset[str]) -> list[Point]:
    """``samples`` distinct draws of (architecture index, optimizer, learning rate, batch size,
    momentum) from ``space`` (see :func:`draw`); the architecture is a uniform choice. Reproducible
    from ``seed``: Optuna's RandomSampler, one trial per draw. A draw equal to an earlier one is
    drawn again, as Keras Tuner's RandomSearch does: a repeat trains the same configuration twice
    and its luckier copy ranks as if it were evidence (a user trial: 4 of 5 samples one
    configuration, silently). ctq.config refuses more samples than a finite space has distinct
    configurations; ValueError past ``ASKS_PER_SAMPLE`` draws a sample (not met below that)."""
    optuna = _optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points: list[Point] = []
    seen: set[Point] = set()
    for _ in range(ASKS_PER_SAMPLE * samples):
        point = draw(study.ask(), space, architectures, momentum_users)
        if point not in seen:
            seen.add(point)
            points.append(point)
            if len(points) == samples:
                return points
    raise ValueError(f"search.samples: {samples} distinct configurations could not be drawn from search.space in "
                     f"{ASKS_PER_SAMPLE * samples} draws; use fewer samples, or method: grid")


class Random(Search):
    """``samples`` random draws of the space, all known before the run."""

    method = "random"
    takes_samples = "required"
    samples_are = "how many models to draw"

    @classmethod
    def initial_points(cls, space, architectures, samples, seed, momentum_users):
        return random_points(space, architectures, samples, seed, momentum_users)

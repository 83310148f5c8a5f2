"""Hyperband as Optuna's HyperbandPruner runs it: brackets of asynchronous successive halving."""

from __future__ import annotations

import bisect
import itertools
import math
import zlib

from ctq.search.asha import Asha
from ctq.search.base import _optuna


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

    method = "hyperband"
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

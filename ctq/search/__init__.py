"""Search methods: which models a run trains, and what is decided while they train.

One module per method, each a subclass of :class:`~ctq.search.base.Search`; sampling and pruning
are Optuna's (a well-kept library), inside the methods. Adding a method is adding its module and
naming its class in :data:`METHODS`, the one place a ``search.method`` maps to its class.
"""

from __future__ import annotations

from ctq.search.asha import Asha
from ctq.search.base import Decision, Search
from ctq.search.grid import Grid
from ctq.search.hyperband import Hyperband
from ctq.search.random import Random
from ctq.search.tpe import Tpe

__all__ = ["METHODS", "Decision", "Search", "search_class"]

METHODS: dict[str, type[Search]] = {cls.method: cls for cls in (Grid, Random, Asha, Hyperband, Tpe)}


def search_class(method: str | None) -> type[Search]:
    """The class of ``search.method`` (None or empty: grid, the default)."""
    return METHODS[str(method or "grid").lower()]

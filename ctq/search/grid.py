"""Grid search: every combination of the search space, for every architecture."""

from __future__ import annotations

import itertools
from typing import Any

from ctq.search.base import MAX_MODELS, Point, Search


def grid_points(space: dict[str, Any], architectures: int, momentum_users: frozenset[str]) -> list[Point]:
    """Every (architecture index, optimizer, learning rate, batch size, momentum) of ``space``
    (lists only), momentum only for the optimizers in ``momentum_users``. ValueError beyond
    :data:`MAX_MODELS`."""
    opts, lrs, bss = space["optimizer"], space["learning_rate"], space["batch_size"]
    moms = space.get("momentum")
    per_arch = len(lrs) * len(bss) * sum(len(moms) if moms and o in momentum_users else 1 for o in opts)
    total = architectures * per_arch
    if total > MAX_MODELS:
        raise ValueError(f"the grid expands to {total} models ({architectures} architectures x {per_arch} "
                         f"hyper-parameter combinations); the limit is {MAX_MODELS}")
    points = []
    for arch in range(architectures):
        for opt in opts:
            for lr, bs in itertools.product(lrs, bss):
                for mom in (moms if moms and opt in momentum_users else [None]):
                    points.append((arch, opt, lr, bs, mom))
    return points


class Grid(Search):
    """Every combination of the space (search.samples is refused: a grid tries them all)."""

    method = "grid"
    takes_samples = "never"

    @classmethod
    def initial_points(cls, space, architectures, samples, seed, momentum_users):
        return grid_points(space, architectures, momentum_users)

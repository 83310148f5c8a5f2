"""Will a model's training fit a segment's memory? Checked before a segment's warm-up builds any
model, so that a model too large for the machine is refused in seconds (exit 2, naming it and the
sizes) instead of failing, or taking the server down, after minutes of compiling.

Pure logic: the sizes come from the server (``ctq.model_sizes``: each model's state counted from
its shapes, and the server's memory), the decision is made here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctq.errors import TooLarge

#: A segment backend's peak resident memory while training, over the model's stored state bytes.
#: Measured (bench/model_size.py, a 1.9 GiB state of 2 x dense 13000 with Adam, jax on CPU): on
#: PostgreSQL 1.87-1.93, at the load of a stored state (the state, plus the largest array read and
#: its copy into jax; the update step reuses its inputs' buffers); on Greenplum 6 (--dsn, 2
#: primaries) 1.95; on Citus 13 (2 workers, the workers' backends watched) 2.00.
PEAK_OVER_STATE = 2.6


@dataclass(frozen=True)
class Budget:
    """The memory one segment may use, in bytes, and where that figure comes from (for the message)."""

    bytes: int
    source: str
    server_bytes: int | None = None  # the server's whole memory (host or cgroup), when known

    @classmethod
    def of(cls, memory_budget_mb: int | None, server_bytes: int | None, sharing: int) -> Budget | None:
        """``memory_budget_mb`` when the config sets it, else the server's memory (host or
        cgroup, ``server_bytes``) shared by the ``sharing`` segments on that host; None when
        neither is known (nothing is checked then). A budget set above the server's memory does
        not let a model past it (:func:`check_fits`)."""
        if memory_budget_mb is not None:
            return cls(memory_budget_mb << 20, f"memory_budget_mb {memory_budget_mb}", server_bytes or None)
        if server_bytes:
            share = server_bytes // max(1, sharing)
            return cls(share, f"the server's {gib(server_bytes)} of memory over {sharing} segment(s)", server_bytes)
        return None


def gib(n: float) -> str:
    """Bytes as people read them: 1.90 GiB, 121 MiB, 96 KiB."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def training_bytes(state_bytes: int) -> int:
    """A segment's peak memory training a model whose stored state is ``state_bytes``."""
    return int(state_bytes * PEAK_OVER_STATE)


def check_fits(models: list[list[tuple[int, str, str]]], sizes: list[dict], budget: Budget | None,
               data_bytes: int = 0, segment: int = 0) -> None:
    """Raise :class:`~ctq.errors.TooLarge` for the first group of models whose training would
    not fit ``budget`` next to the segment's cached data (``data_bytes``; 0 when it streams), nor
    the server's whole memory, whatever memory_budget_mb says (the backend would be killed, or
    take the server down). The message's fixes are those that can work: a larger budget or fewer
    segments only while the need is within the server's memory.

    ``models[i]``: the (model_id, name, optimizer) of the models sharing ``sizes[i]``, one of
    ``ctq.model_sizes``' entries ({"parameters", "trainable", "slots", "state_bytes"}, or None).
    """
    if budget is None:
        return
    for group, size in zip(models, sizes):
        if size is None:  # not countable: the warm-up's build will say why
            continue
        need = training_bytes(size["state_bytes"]) + data_bytes
        server = budget.server_bytes
        if (need <= budget.bytes and (server is None or need <= server)) or not group:
            continue
        model_id, name, optimizer = group[0]
        more = f" and {len(group) - 1} more of the same architecture" if len(group) > 1 else ""
        data = f" + {gib(data_bytes)} of the segment's cached data" if data_bytes else ""
        if server is not None and need > server:
            has, fix = (f"the server has {gib(server)} in all" + (f" ({budget.source} is more than it has)"
                                                                  if need <= budget.bytes else ""),
                        "use a smaller model")
        else:
            has = f"the segment has {gib(budget.bytes)} ({budget.source})"
            fix = ("use a smaller model, fewer segments, or a larger memory_budget_mb"
                   + (f" (up to the server's {gib(server)})" if server is not None else ""))
        raise TooLarge(
            f"model {model_id} ({name}){more} does not fit segment {segment}'s memory: training needs about "
            f"{gib(need)} ({gib(size['state_bytes'])} of state: {size['parameters']:,} parameters, {optimizer} "
            f"keeps {size['slots']} value(s) per weight; x{PEAK_OVER_STATE:g} at peak{data}), {has}; {fix}")

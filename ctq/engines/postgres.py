"""PostgreSQL: one server, *virtual* segments.

The pack is list-partitioned by segment; each segment's connection is an ordinary backend whose
targeted query reads its own partition (and the validation partition), and each backend is pinned
to its share of the cores. Everything here is the default behaviour of :class:`Engine`.
"""

from __future__ import annotations

from ctq.engines.base import Engine


class PostgresEngine(Engine):
    name = "postgres"

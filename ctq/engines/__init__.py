"""Database engines: the one place that decides which engine a server is and what that changes.

An engine is a small class (:class:`~ctq.engines.base.Engine`) plus one folder of SQL templates
(``sql_templates/<engine>/``) holding only the statements that differ from ``sql_templates/common/``
— the way Optuna keeps one module per storage and dbt adapters dispatch macros per engine.

- ``postgres``: one PostgreSQL server; *virtual* segments are list partitions of the pack, and a
  segment's targeted query filters on the partition key.
- ``greenplum``: Greenplum 6/7 and Apache Cloudberry; the segments are the primary segments, the
  pack is distributed with one known key per segment, and every targeted query carries
  ``gp_segment_id = k`` as a literal so it is direct-dispatched to that segment alone.
- ``citus``: Citus with at least one worker; the segments are shards of the state tables'
  co-location group, and every targeted query filters on its segment's distribution key as a
  literal so that Citus sends it whole to that shard's worker (a router query).
"""

from __future__ import annotations

import weakref

import asyncpg

from ctq.engines.base import Engine
from ctq.engines.citus import CitusEngine
from ctq.engines.greenplum import GreenplumEngine
from ctq.engines.postgres import PostgresEngine
from ctq.sql import template

ENGINES: dict[str, type[Engine]] = {"postgres": PostgresEngine, "greenplum": GreenplumEngine, "citus": CitusEngine}

__all__ = ["ENGINES", "CitusEngine", "Engine", "GreenplumEngine", "PostgresEngine", "detect", "engine_named"]


def engine_named(name: str) -> Engine:
    return ENGINES[name]()


_detected: weakref.WeakKeyDictionary[asyncpg.Connection, Engine] = weakref.WeakKeyDictionary()


async def detect(conn: asyncpg.Connection) -> Engine:
    """The engine of the server behind ``conn``: Greenplum when it has gp_segment_configuration
    (Greenplum 6/7, Cloudberry), Citus when the database has the citus extension and at least
    one worker that holds shards (a coordinator alone is PostgreSQL to ctq), else PostgreSQL.
    Asked once per connection."""
    if conn not in _detected:
        if await conn.fetchval(template("detect_greenplum.sql")):
            _detected[conn] = GreenplumEngine()
        elif await conn.fetchval(template("detect_citus.sql")) and \
                await conn.fetchval(CitusEngine().template("workers.sql")):
            _detected[conn] = CitusEngine()
        else:
            _detected[conn] = PostgresEngine()
    return _detected[conn]

"""Every connection ctq opens, in one place, with the session settings ctq's work needs.

A database or role may carry settings such as ``ALTER DATABASE ... SET statement_timeout = '3s'``
for interactive users; a warm-up, a packing statement or a long hop would be cancelled by them.
ctq's own sessions override what would stop them (``statement_timeout = 0``: ctq has its own
cancel and retry rules) and name themselves in ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncpg

SESSION_SETTINGS = {"statement_timeout": "0", "lock_timeout": "0"}


async def connect(dsn: str, application_name: str = "ctq") -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={**SESSION_SETTINGS, "application_name": application_name})

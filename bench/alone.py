"""Run one benchmark module's figures alone, on a throwaway embedded PostgreSQL (``python
bench/search.py``, ``python bench/model_size.py``, ``python bench/packing.py``,
``python bench/catalog_scale.py``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from ctq.embedded import EmbeddedCluster


def run_alone(prefix: str, *figures) -> None:
    """Start a server under a new /tmp/``prefix``*, print each figure of every ``figures(dsn)``
    coroutine function as it comes, stop and remove the server."""

    async def main() -> None:
        home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chmod(home, 0o755)
        cluster = EmbeddedCluster(home)
        dsn = cluster.start()
        try:
            for figure in figures:
                for name, value, target, detail in await figure(dsn):
                    print(f"{name}: {value:.3f} (target {target}) - {detail}", flush=True)
        finally:
            cluster.stop()
            shutil.rmtree(home, ignore_errors=True)

    asyncio.run(main())

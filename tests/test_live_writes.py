"""A source that is written to while ctq reads it (issue 21 point 2): packing and scoring split
their reads over several sessions (the profile, the packing workers; the row check, the scoring
segments), and a row's seeded key comes from its ctid, which an UPDATE changes. Every session
reads one exported snapshot, so the pack (and a prediction) holds every row of one moment exactly
once, with the row counts the catalog records. Real server, real CLI, a real concurrent writer."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import numpy as np
import pytest

from conftest import ctq_cli, write_grid
from ctq.rules import PackStats

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROWS = 60_000

GRID = """
    name: live-writes
    data: {table: public.live, features: [id, f1], label: label, task: classification,
           validation_fraction: 0.3}
    segments: 2
    models: [{name: m, layers: [{dense: 4}]}]
    search: {space: {batch_size: [2000]}}
    epochs: 1
    metric: val_accuracy
"""


class Writer:
    """Single-statement UPDATEs on a seventh of the rows each, committed one after another until
    stopped: every row changes its ctid every few statements, the row count never changes."""

    def __init__(self, dsn):
        self.dsn, self.updates, self.stop = dsn, 0, asyncio.Event()

    async def __aenter__(self):
        self.conn = await asyncpg.connect(self.dsn)
        self.task = asyncio.ensure_future(self._write())
        return self

    async def _write(self):
        while not self.stop.is_set():
            await self.conn.execute("UPDATE public.live SET f1 = f1 + 1 WHERE id % 7 = $1", self.updates % 7)
            self.updates += 1

    async def __aexit__(self, *exc):
        self.stop.set()
        await self.task
        await self.conn.close()


async def test_a_pack_and_a_prediction_under_live_updates_hold_every_row_once(dsn, conn, ctq_home, tmp_path):
    from ctq.indb import decode_buffers

    await conn.execute("DROP TABLE IF EXISTS public.live")
    await conn.execute("CREATE TABLE public.live AS SELECT g AS id, (g % 97)::float8 AS f1, g % 2 AS label "
                       "FROM generate_series(1, $1) g", ROWS)
    grid = write_grid(tmp_path, GRID)
    async with Writer(dsn) as writer:
        code, out, err = await ctq_cli(dsn, ctq_home, "train", str(grid), "--json")
        during_training = writer.updates
        assert code == 0, err
        run_id = json.loads(out)["run_id"]
        pcode, pout, perr = await ctq_cli(dsn, ctq_home, "predict", str(run_id), "--table", "public.live",
                                          "--id-column", "id", "--out", "public.live_predicted", "--replace",
                                          "--json")
    assert during_training > 10 and writer.updates > during_training, (during_training, writer.updates)

    pack = await conn.fetchrow("SELECT p.* FROM ctq.runs r JOIN ctq.packs p USING (pack_id) WHERE r.run_id = $1",
                               run_id)
    stats = PackStats.from_dict(json.loads(pack["stats"]))
    assert stats.source_as_of
    buffers = await conn.fetch(f"SELECT segment, rows, x, y, k FROM {pack['table_name']} WHERE bucket >= 0")
    ids = {}
    for segment in (-1, 0, 1):
        x, _ = decode_buffers([tuple(r)[1:] for r in buffers if r["segment"] == segment], stats, "classification")
        ids[segment] = np.rint(x[:, 0] * stats.std[0] + stats.mean[0]).astype(np.int64)
    every = np.sort(np.concatenate(list(ids.values())))
    assert len(every) == ROWS and np.array_equal(every, np.arange(1, ROWS + 1)), \
        f"{len(every)} rows packed, {len(set(every.tolist()))} distinct, of {ROWS}"
    assert stats.validation_rows == len(ids[-1])  # what was recorded is what was packed
    assert stats.train_rows == len(ids[0]) + len(ids[1])

    assert pcode == 0, perr
    predicted = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS ids, min(id) AS lo, max(id) AS hi "
                                    "FROM public.live_predicted")
    assert tuple(predicted) == (ROWS, ROWS, 1, ROWS)
    await conn.execute("DROP TABLE public.live_predicted")

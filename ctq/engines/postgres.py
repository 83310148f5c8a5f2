"""PostgreSQL: one server, *virtual* segments.

The pack is list-partitioned by segment; each segment's connection is an ordinary backend whose
targeted query reads its own partition (and the validation partition), and each backend is pinned
to its share of the cores. Catalog rows are kept apart by row-level security.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ctq.connection import Snapshot
from ctq.connection import connect as open_connection
from ctq.engines.base import VALIDATION_MODULUS, Engine, HopStatements, PackSpec, ScoreSpec


class PostgresEngine(Engine):
    name = "postgres"
    title = "PostgreSQL"

    async def segments(self, conn: asyncpg.Connection, requested: int | None, default: int) -> tuple[int, str | None]:
        """How many segments a run gets, and a notice for the user if their setting is not used."""
        return (requested or default), None

    async def write(self, conn: asyncpg.Connection, name: str, *args: object) -> object:
        """Run the catalog-changing statement ``name`` (a template) with bind ``args``; returns its
        first value. On PostgreSQL the plain statement, under row-level security."""
        return await conn.fetchval(self.render(name, catalog=self.catalog), *args)

    def row_key(self, alias: str, seed: int, is_table: bool) -> str:
        """SQL for a deterministic int8 key per row, seeded: it orders the shuffle, picks the
        validation rows and the row's bucket. ``setseed()``/``random()`` would not do: they are
        not reproducible across scans (and on Greenplum seed only the coordinator)."""
        if is_table:
            return f"hashtidextended({alias}.ctid, {int(seed)})"
        return f"hashtextextended(ROW({alias}.*)::text, {int(seed)})"

    def row_version(self, alias: str, is_table: bool) -> str:
        """SQL for an int8 that changes whenever the row changes (summed into the fingerprint)."""
        if is_table:
            return f"hashtidextended({alias}.ctid, {alias}.xmin::text::int8)"
        return f"hashtextextended(ROW({alias}.*)::text, 0)"

    def pack_select(self, spec: PackSpec, worker: int, workers: int) -> str:
        """The SELECT that builds worker ``worker``'s share of the buffers (every ``workers``-th
        (segment, bucket), so the workers get equal shares whatever the validation fraction)."""
        return self.render("pack_select.sql", rows=self.pack_rows(spec), worker=int(worker), workers=int(workers))

    def pack_rows(self, spec: PackSpec) -> str:
        """The SELECT of the source's rows as packing sees them: (segment, bucket, key, xb, yb)."""
        return self.render(
            "pack_rows.sql", key=self.row_key("t", spec.seed, spec.is_table), source=spec.source,
            x_bytes=spec.x_bytes, y_bytes=spec.y_bytes, modulus=VALIDATION_MODULUS, cut=spec.validation_cut,
            segments=spec.segments, buckets=spec.buckets, validation_buckets=spec.validation_buckets,
        )

    async def create_pack(self, conn: asyncpg.Connection, spec: PackSpec) -> None:
        await conn.execute(self.render("pack_create.sql", table=spec.table, segments=spec.segments,
                                       partitions="\n".join(
                                           self.render("pack_partition.sql", table=spec.table,
                                                       partition=spec.table[:-1] + f'_s{s}"', segment=s)
                                           for s in range(-1, spec.segments))))

    async def fill_pack(self, dsn: str, spec: PackSpec, workers: int, source: Snapshot) -> None:
        """Pack on ``workers`` sessions at once, each building a share of the buffers (each scans
        the source; the server's CPUs do the work in parallel, no row leaves the server). Every
        worker reads the ``source`` snapshot the profile read: the same rows, the same keys. The
        first worker is the snapshot's own session (its rows commit with it), so one worker opens
        no connection: the run's sessions stay within segments + 2 while the segments preload."""

        async def fill(conn, worker):
            await conn.execute(self.template("pack_session.sql"))
            await conn.execute(self.render("pack_fill.sql", table=spec.table,
                                           select=self.pack_select(spec, worker, workers)))

        async def one(worker):
            conn = await open_connection(dsn, "ctq pack")
            try:
                async with source.joined(conn):
                    await fill(conn, worker)
            finally:
                await conn.close()

        await asyncio.gather(fill(source.conn, 0), *(one(w) for w in range(1, workers)))

    async def finish_pack(self, conn: asyncpg.Connection, spec: PackSpec) -> None:
        await conn.execute(self.render("pack_markers.sql", table=spec.table, segments=spec.segments))

    def train_query(self, segment: int, pack_id: str, pack_table: str, params: str, rows: str = "cached",
                    state_parts: str = "") -> str:
        """The targeted query of ``segment``: the segment is a literal, and so is the pack id (hex
        digits, checked). ``params``: SQL for the parameters (JSON text); ``state_parts``: a UNION
        ALL branch adding the model's state parts to the aggregate's rows (none for the warm-up).

        ``rows``: "cached" (buffer rows only when the backend has not cached them), "stream" (all
        rows every time, the segment's own before the validation ones: nothing is cached) or
        "markers" (only the marker rows: a streaming segment's warm-up reads no data).
        """
        if not all(c in "0123456789abcdef" for c in pack_id):
            raise ValueError(f"not a pack id: {pack_id!r}")
        order = " ORDER BY b.segment DESC, b.bucket" if rows == "stream" else ""
        return self.render("train_query.sql", segment=int(segment), pack_table=pack_table, params=params,
                           rows_filter=self.rows_filter(pack_id, int(segment), rows), order=order,
                           state_parts=state_parts)

    def rows_filter(self, pack_id: str, segment: int, rows: str) -> str:
        """SQL keeping the pack rows the targeted query of ``segment`` reads (see :meth:`train_query`)."""
        return {"cached": self.cached_filter(pack_id, segment), "stream": "TRUE", "markers": "b.bucket < 0"}[rows]

    def cached_filter(self, pack_id: str, segment: int) -> str:
        """Keep the marker rows, and the buffer rows only while this backend has not cached them.
        On PostgreSQL the check is an uncorrelated subquery, evaluated once per hop (an InitPlan)
        rather than once per buffer row."""
        return f"(b.bucket < 0 OR NOT (SELECT ctq.data_cached('{pack_id}', {segment})))"

    def hop_statements(self, segment: int, pack_id: str, pack_table: str, stream: bool = False) -> HopStatements:
        """The hop and the checkpoint are one statement each (hop.sql): a hop writes the model's
        working state to a file (working_states_files.sql), a checkpoint to model_states."""
        train_query = self.train_query(segment, pack_id, pack_table, "$5::text", "stream" if stream else "cached",
                                       self.template("state_parts_rows.sql"))
        return HopStatements(
            sizes=self.template("model_sizes.sql"),
            warmup=self.render("warmup.sql", train_query=self.train_query(
                segment, pack_id, pack_table, "$1::text", "markers" if stream else "cached")),
            hop=self.render("hop.sql", segment=int(segment), train_query=train_query,
                            store=self.template("hop_working.sql")),
            checkpoint=self.render("hop.sql", segment=int(segment), train_query=train_query,
                                   store=self.template("hop_checkpoint.sql")),
        )

    async def run_hop(self, conn, statements, run_id, model_id, epoch, last_of_epoch, params, hops, checkpoint=False):
        """One statement: the hop is recorded entirely or not at all."""
        return await conn.fetchrow(statements.checkpoint if checkpoint else statements.hop, run_id, model_id, epoch,
                                   last_of_epoch, params, hops)

    async def prepare_scoring(self, conn: asyncpg.Connection, spec: ScoreSpec, run_id: int, model_id: int,
                              params: list[str]) -> list[tuple]:
        """PostgreSQL stages nothing: each virtual segment's query reads the source and keeps the rows
        whose hash falls on it, and the model's stored state where it is; the run, the model and
        the parameters travel as $1, $2 and $3."""
        return [(run_id, model_id, p) for p in params]

    def score_query(self, spec: ScoreSpec, segment: int) -> str:
        """The targeted scoring query of ``segment``: one row (ids, r), r a ``ctq.score_result``.
        A row belongs to virtual segment ``(row_key & 2^31-1) mod segments`` (seed 0): every row
        to exactly one segment, about evenly."""
        key = self.row_key("t", 0, spec.is_table)
        return self.render("score_query.sql", segment=int(segment), id=spec.id, id_type=spec.id_type,
                           x_bytes=spec.x_bytes, y_bytes=spec.y_bytes, source=spec.source,
                           rows_filter=f"(({key}) & 2147483647) % {int(spec.segments)} = {int(segment)}")

    async def finish_scoring(self, conn: asyncpg.Connection, spec: ScoreSpec) -> None:
        """Drop whatever :meth:`prepare_scoring` staged (nothing on PostgreSQL)."""

    async def doctor_checks(self, conn, probe):
        """The server's keras/jax/numpy against the client's (its backends train)."""
        from ctq.doctor import version_check

        return [version_check("server", [probe])]

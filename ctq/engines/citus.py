"""Citus: PostgreSQL scaled out over workers, tables sharded by a distribution column.

- A Citus database is PostgreSQL on the coordinator: the catalog (runs, models, hops, packs) stays
  there, as on PostgreSQL, under the same row-level security; this engine subclasses
  :class:`~ctq.engines.postgres.PostgresEngine` and ``sql_templates/citus/`` holds only what
  differs from ``sql_templates/postgres/`` (its ``inherits`` file).
- The segments are shards: the state tables (``ctq.model_states``, ``ctq.hop_states``) are
  distributed by ``dist_key`` and every pack is co-located with them. Each shard of that
  co-location group is one possible MOP segment (``ctq.citus_segments``: the segment, the smallest
  key value of its shard; numbered round-robin over the workers), so segment k's buffers, and the
  states its hops store, live in one shard on one worker.
- Every targeted query of segment k (warm-up, memory check, training, storing the new state)
  filters the pack and the state tables on segment k's key as a literal: Citus sends it whole to
  that shard's worker as a router query (one task), and the aggregate runs there, in the worker
  backend that serves the segment's connection (its PL/Python GD caches the data and the models).
  The training function says from inside on which node it ran (``ctq.execution_segment``): a hop
  that ran on another node is refused by ``ctq.record_hop``.
- A hop on another segment than the model's last one first copies the state there with
  ``ctq.citus_move_state``, a distributed function that Citus delegates to the new segment's
  worker, which reads the parts from the old one: worker to worker, never through the coordinator
  or the client. The hop itself is one transaction: train (router SELECT), store the new parts
  (router INSERT ... SELECT, in the same worker backend), delete the state it replaced (router
  DELETEs), record the hop (on the coordinator): recorded entirely or not at all (Citus commits it
  on every node it touched with two-phase commit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from ctq.connection import connect as open_connection
from ctq.engines.base import HopStatements, PackSpec
from ctq.engines.postgres import PostgresEngine


@dataclass(frozen=True)
class CitusHopStatements(HopStatements):
    """A Citus hop's statements beyond :class:`HopStatements` (whose ``hop`` and ``checkpoint``
    store the new state into hop_states or model_states): ``train``, the router training query of
    the segment; ``record``, the hop's record on the coordinator; the segment and its key."""

    train: str
    record: str
    segment: int
    key: int


class CitusEngine(PostgresEngine):
    name = "citus"
    title = "Citus"
    #: a scoring's stage (on the workers) must be committed before the segments read it: the row
    #: check and the stage run in one transaction, which then commits; so does the packing
    exports_snapshots = False

    def __init__(self):
        self.keys: list[int] | None = None  # each segment's distribution key (attach)

    async def attach(self, conn: asyncpg.Connection) -> None:
        """Each segment's distribution key (ctq.citus_segments), which every targeted query
        carries as a literal."""
        if self.keys is None:
            self.keys = [r["dist_key"] for r in await conn.fetch(self.template("segments.sql"))]

    def key(self, segment: int) -> int:
        if self.keys is None:
            raise RuntimeError("CitusEngine.attach() must run before the segments' statements are built")
        if not 0 <= segment < len(self.keys):
            raise ValueError(f"segment {segment}: Citus offers {len(self.keys)} segments (shards)")
        return int(self.keys[segment])

    async def segments(self, conn, requested, default):
        """One segment per worker unless ``segments:`` asks for more (several on a worker with the
        cores), at most one per shard of the co-location group."""
        await self.attach(conn)
        workers = await conn.fetchval(self.template("workers.sql"))
        count, notice = requested or workers, None
        if count > len(self.keys):
            notice = (f"segments: {count} reduced to {len(self.keys)}: the co-location group of ctq's tables has "
                      f"{len(self.keys)} shards (citus.shard_count at the first `ctq install`)")
            count = len(self.keys)
        return count, notice

    # -- row identity ----------------------------------------------------------------------------
    def row_key(self, alias: str, seed: int, is_table: bool) -> str:
        """A row of a table is its table (a shard, on a worker) and its ctid: ctids repeat across the
        shards of a distributed table (measured: 40,000 rows in 32 shards, 1,324 distinct ctid keys).
        The shard enters by its oid (only immutable functions may be pushed down, regclass's name is
        not): shards with the same oid on two workers still share keys (there: 38,776 distinct)."""
        if is_table:
            return f"hashtidextended({alias}.ctid, {int(seed)} # {alias}.tableoid::int8)"
        return super().row_key(alias, seed, is_table)

    def row_version(self, alias: str, is_table: bool) -> str:
        if is_table:
            return f"hashtidextended({alias}.ctid, {alias}.xmin::text::int8 # ({alias}.tableoid::int8 << 32))"
        return super().row_version(alias, is_table)

    # -- packing ---------------------------------------------------------------------------------
    def key_map(self, segments: int) -> str:
        return ", ".join(f"({s}, {self.key(s)})" for s in range(segments))

    def pack_select(self, spec: PackSpec, worker: int, workers: int) -> str:
        """PostgreSQL's share of the buffers, each tagged with its segment's key (the validation
        buffers with every segment's: each shard holds its own copy)."""
        return self.render("pack_keyed.sql", select=super().pack_select(spec, worker, workers),
                           key_map=self.key_map(spec.segments))

    @staticmethod
    def pack_stage(spec: PackSpec) -> str:
        return spec.table[:-1] + '_stage"'

    async def fill_pack(self, dsn, spec, workers, source):
        """A source on the coordinator: PostgreSQL's packing in one session, the snapshot's own
        (not exported: see ``exports_snapshots``), each buffer sent to its segment's shard. A
        distributed source: on the workers, in two statements of that session: every row to its
        segment's shard, worker to worker (pack_stage.sql), then every worker groups its shards'
        rows into buffers (pack_buffers.sql). (Citus has no snapshot across nodes: each worker
        reads its shards as of its own statement.)"""
        if not await source.conn.fetchval(self.template("source_distributed.sql"), spec.source):
            await super().fill_pack(dsn, spec, 1, source)
            return
        stage = self.pack_stage(spec)
        conn = await open_connection(dsn, "ctq pack")  # (the stage's DDL, committed before the rows)
        try:
            await conn.execute(self.render("pack_stage_create.sql", stage=stage))
        finally:
            await conn.close()
        await source.conn.execute(self.render("pack_stage.sql", stage=stage, rows=self.pack_rows(spec),
                                              key_map=self.key_map(spec.segments)))
        await source.conn.execute(self.render("pack_buffers.sql", table=spec.table, stage=stage))

    async def create_pack(self, conn, spec):
        await self.attach(conn)
        await conn.execute(self.render("pack_create.sql", table=spec.table))

    async def finish_pack(self, conn, spec):
        """The markers, and the stage of a distributed source's packing dropped (its rows are in)."""
        await conn.execute(self.render("pack_markers.sql", table=spec.table, key_map=self.key_map(spec.segments)))
        await conn.execute(self.render("drop_table.sql", table=self.pack_stage(spec)))

    # -- training --------------------------------------------------------------------------------
    def rows_filter(self, pack_id: str, segment: int, rows: str) -> str:
        """PostgreSQL's filter on segment ``segment``'s shard: its key, a literal."""
        return f"b.dist_key = {self.key(segment)} AND {super().rows_filter(pack_id, segment, rows)}"

    def hop_statements(self, segment, pack_id, pack_table, stream=False):
        key = self.key(segment)
        rows = "stream" if stream else "cached"
        train = self.train_query(segment, pack_id, pack_table, "$1::text", rows,
                                 self.render("state_parts_rows.sql", dist_key=key))
        store = {target: self.render("hop_store.sql", target=target, pack_table=pack_table, dist_key=key,
                                     segment=int(segment))
                 for target in ("hop_states", "model_states")}
        return CitusHopStatements(
            sizes=self.render("model_sizes.sql", pack_table=pack_table, dist_key=key, segment=int(segment)),
            warmup=self.render("warmup.sql", train_query=self.train_query(
                segment, pack_id, pack_table, "$1::text", "markers" if stream else "cached")),
            hop=store["hop_states"], checkpoint=store["model_states"],
            train=self.render("hop_train.sql", train_query=train),
            record=self.render("hop_record.sql", segment=int(segment)),
            segment=int(segment), key=key,
        )

    async def state_key(self, conn: asyncpg.Connection, run_id: int, model_id: int, hops: int) -> int | None:
        """The key of the shard holding the model's state of ``hops`` hops: that of the segment
        of its last recorded hop; before its first hop (a warm start's copy) or when it is not
        there, found by its header part; None when it has none."""
        last = await conn.fetchval(self.template("state_segment.sql"), run_id, model_id)
        if last is not None and last < len(self.keys):
            return int(self.keys[last])
        return await conn.fetchval(self.template("state_locate.sql"), run_id, model_id, hops)

    async def run_hop(self, conn, statements, run_id, model_id, epoch, last_of_epoch, params, hops, checkpoint=False):
        """Move the state to the segment's shard if it is elsewhere (a delegated call, its own
        transaction: a copy, harmless if the hop then fails), then train, store, delete what the
        new state replaces and record the hop in one transaction."""
        source = await self.state_key(conn, run_id, model_id, hops)
        if source is not None and source != statements.key:
            moved = await conn.fetchval(self.template("move_state.sql"), statements.key, run_id, model_id, hops, source)
            if not moved:  # not where its last hop left it (restored from a checkpoint elsewhere)
                source = await conn.fetchval(self.template("state_locate.sql"), run_id, model_id, hops)
                if source is not None and source != statements.key:
                    await conn.fetchval(self.template("move_state.sql"), statements.key, run_id, model_id, hops,
                                        source)
        async with conn.transaction():
            r = await conn.fetchval(statements.train, params, run_id, model_id, hops)
            status = await conn.execute(statements.checkpoint if checkpoint else statements.hop, run_id, model_id,
                                        hops, r["state_key"])
            for key in {statements.key, source} - {None}:
                await conn.execute(self.template("state_drop.sql"), key, run_id, model_id, hops)
            if checkpoint:
                await conn.execute(self.template("checkpoint_drop.sql"), run_id, model_id, hops)
            if await conn.fetchval(statements.record, run_id, model_id, epoch, last_of_epoch, r,
                                   int(status.split()[-1])) is None:
                return None
        return r

    # -- scoring ---------------------------------------------------------------------------------
    async def prepare_scoring(self, conn, spec, run_id, model_id, params):
        """Stage the rows in the segments' shards (score_stage.sql, in the scoring's snapshot) with
        one header row per segment (its parameters); each segment's query reads the model's state
        where it lies (its shard's key and hops, found here: state_newest.sql)."""
        await self.attach(conn)
        await conn.execute(self.render(
            "score_stage.sql", stage=spec.stage, id=spec.id, id_type=spec.id_type, x_bytes=spec.x_bytes,
            y_bytes=spec.y_bytes, source=spec.source, key=self.row_key("t", 0, spec.is_table),
            segments=int(spec.segments), key_map=self.key_map(spec.segments)))
        for segment, segment_params in enumerate(params):
            await conn.execute(self.render("score_header.sql", stage=spec.stage, dist_key=self.key(segment)),
                               segment_params)
        state = await conn.fetchrow(self.template("state_newest.sql"), run_id, model_id)
        where = (state["dist_key"], state["hops"]) if state else (None, None)
        return [(run_id, model_id, *where) for _ in params]

    def score_query(self, spec, segment):
        return self.render("score_query.sql", stage=spec.stage, segment=int(segment), dist_key=self.key(segment),
                           id_type=spec.id_type)

    async def finish_scoring(self, conn, spec):
        await conn.execute(self.render("drop_table.sql", table=spec.stage))

    # -- diagnosis -------------------------------------------------------------------------------
    async def doctor_checks(self, conn, probe):
        """On Citus: PL/Python and Keras *on every worker* (their versions the client's), and
        whether a training query of segment 0 is a router query (EXPLAIN: one task, on the node
        of segment 0's shard), on the newest pack."""
        from ctq.doctor import Check, version_check

        checks = []
        fix = ("install keras + jax on every worker, readable by its OS user, and run "
               "`ctq install --python-path <site-packages>`")
        rows = await conn.fetch(self.template("probe_workers.sql"))
        bad = [f"{r['nodename']}:{r['nodeport']}" for r in rows if not r["success"]]
        probes = [json.loads(r["result"]) for r in rows if r["success"]]
        checks.append(Check("keras on workers", not bad and bool(rows),
                            f"{len(rows)} workers; keras {', '.join(sorted({p['keras'] for p in probes})) or '-'}"
                            + (f"; failed on {', '.join(bad)}" if bad else ""), fix))
        if probes:
            checks.append(version_check("workers", probes))
        pack = await conn.fetchrow(self.template("newest_pack.sql"))
        if pack is None:
            checks.append(Check("router queries", True, "no pack yet: the plan is shown once a run has packed", ""))
            return checks
        await self.attach(conn)
        plan = await self.explain_training(conn, pack["pack_id"], pack["table_name"])
        node = (await conn.fetch(self.template("segments.sql")))[0]
        router = "Task Count: 1" in plan and f"port={node['nodeport']} " in plan
        shown = plan.replace("\n", "\n      ")
        checks.append(Check("router queries", router,
                            f"training query of segment 0 (pack {pack['pack_id']}):\n      {shown}",
                            "the plan should be one task (Task Count: 1) on the worker of segment 0's shard; "
                            "run `ctq install` again after moving shards"))
        return checks

    async def explain_training(self, conn: asyncpg.Connection, pack_id: str, pack_table: str) -> str:
        """EXPLAIN (VERBOSE) of the training query of segment 0 on pack ``pack_id``."""
        train = self.hop_statements(0, pack_id, pack_table).train
        return "\n".join(r[0] for r in await conn.fetch("EXPLAIN (VERBOSE) " + train, "{}", 0, 0, 0))

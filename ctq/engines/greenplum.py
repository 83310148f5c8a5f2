"""Greenplum 6/7 and Apache Cloudberry: real MPP segments.

- The segments are the primary segments (``gp_segment_configuration``, role ``p``, content >= 0);
  ``segments:`` in ``grid.yaml`` is ignored with a notice.
- The pack is ``DISTRIBUTED BY (dist_key)`` with one key value per segment (MADlib's trick), built
  by each segment from its own rows in parallel; validation buffers are copied to every segment.
- Every targeted query carries ``gp_segment_id = k`` as a literal and groups by the distribution
  key, so it is direct-dispatched to segment k with no Motion below the aggregate (a literal, not
  a bind parameter: generic plans of ``$1`` are not direct-dispatched, see
  ../shared/reference/engineering-notes.md and greenplum-db/gpdb PRs #10679, #13204).
- A function running on a segment may only read replicated tables: ``ctq.meta``,
  ``ctq.server_code`` and the packs table are ``DISTRIBUTED REPLICATED``. A model's state lies on
  a segment (``ctq_catalog.hop_states`` and ``model_states`` are distributed by the pack's keys);
  a hop is one call of ``ctq.gp_hop``, which moves it from the segment of the model's last hop to
  the hop's segment (segment to segment), runs the targeted query there as an INSERT of the new
  state's parts, and records the hop (sql_templates/greenplum/hop_functions.sql): the state never
  passes through the coordinator or the client.
- Greenplum 6 has no row-level security: the run and pack tables live in schema ``ctq_catalog``
  (only the installer's), analysts read them through same-named filtering views in ``ctq`` and
  change them through SECURITY DEFINER functions that check the caller (the write statements in
  sql_templates/greenplum/ call them; see greenplum/row_security.sql).
"""

from __future__ import annotations

import json

import asyncpg

from ctq.engines.base import VALIDATION_MODULUS, Engine, HopStatements, ScoreSpec

# Feature columns from which packing is planned by the planner, not ORCA (pack_wide.sql's figures)
WIDE_PACK_COLUMNS = 64


class _RollBack(Exception):
    """Ends the transaction of doctor's probe pack with a rollback."""


class GreenplumEngine(Engine):
    name = "greenplum"
    title = "Greenplum"
    #: after an error inside PL/Python the session's Python state may be unsafe to reuse
    #: (engineering notes: a crash of the coordinator followed such a retry): reconnect instead.
    reconnect_after_error = True
    #: a pack's stage and a scoring's stage are each one statement over every segment: the
    #: profile, the row check and the stage run in one transaction instead (no snapshot to share)
    exports_snapshots = False

    #: how the coordinator reports a segment that went away mid-query (e.g. its process crashed and
    #: the segment is restarting): SQLSTATE XX000 with this text, not a connection error
    SEGMENT_LOST = ("Error on receive from seg", "server closed the connection unexpectedly",
                    "the database system is in recovery mode", "the database system is starting up")

    def __init__(self):
        self.keys: list[int] | None = None  # each segment's distribution key (run_hop)

    def is_transient(self, exc):
        message = str(getattr(exc, "message", "") or exc)
        return any(text in message for text in self.SEGMENT_LOST)

    async def write(self, conn, name, *args):
        """The statement calls a SECURITY DEFINER function that checks the caller (row_security.sql).
        Such a function pins search_path, and Greenplum 6.24 then loses the distributed transaction
        of a write made outside an explicit transaction block (measured: "Distributed transaction
        ... not found" from a segment): the call runs inside one."""
        if conn.is_in_transaction():
            return await conn.fetchval(self.template(name), *args)
        async with conn.transaction():
            return await conn.fetchval(self.template(name), *args)

    async def segments(self, conn, requested, default):
        count = await conn.fetchval(self.template("segments.sql"))
        notice = None
        if requested and requested != count:
            notice = f"segments: {requested} ignored: Greenplum has {count} primary segments, and each is one MOP segment"
        return count, notice

    def row_key(self, alias: str, seed: int, is_table: bool) -> str:
        # Greenplum 6 (PostgreSQL 9.4) has no 64-bit seeded hash: two 32-bit ones make the key.
        # A row's identity is (segment, ctid): ctids repeat across segments.
        ident = (f"{alias}.gp_segment_id::text || ':' || {alias}.ctid::text" if is_table
                 else f"ROW({alias}.*)::text")
        return (f"((hashtext({ident} || ':{int(seed)}')::int8 << 32) | "
                f"(hashtext('{int(seed)}:' || {ident})::int8 & 4294967295))")

    def row_version(self, alias: str, is_table: bool) -> str:
        if is_table:
            return (f"hashtext({alias}.gp_segment_id::text || ':' || {alias}.ctid::text || ':' "
                    f"|| {alias}.xmin::text)::int8")
        return f"hashtext(ROW({alias}.*)::text)::int8"

    async def profile_statement(self, conn, slots, **values):
        """Each slot's moments (count, sum, sum of squares: ``ctq.moments``, profile_functions.sql)
        over the training rows and over the validation rows: two aggregates a value where the
        PostgreSQL statement has five. Greenplum 6 (PostgreSQL 9.4) computes ``avg`` and ``var_pop``
        of one input twice, and each aggregate call is dear in its executor (1M x 32 on 2
        segments: 4.0 s against 2.3 s). The statistics follow from the moments as 9.4's ``avg``
        and ``var_pop`` compute them (float8_avg, float8_var_pop); a NaN or an infinity among the
        values makes a sum or a sum of squares NaN or infinite. Where ctq.moments is not there
        to use (ctq not installed yet, or an older version: a check writes nothing, installs
        nothing), the PostgreSQL statement, same results."""
        if not await conn.fetchval(self.template("profile_moments.sql")):
            return await super().profile_statement(conn, slots, **values)
        training, validation = "FILTER (WHERE NOT c.ctq_validation)", "FILTER (WHERE c.ctq_validation)"
        t, v = [f"a.ctq_t{i}" for i in range(len(slots))], [f"a.ctq_v{i}" for i in range(len(slots))]
        return self.render(
            "source_profile_moments.sql", **values,
            moments=", ".join(f"ctq.moments({x}) {training} AS ctq_t{i}, ctq.moments({x}) {validation} AS ctq_v{i}"
                              for i, x in enumerate(slots)),
            counts=", ".join(f"({a}[1] + {b}[1])::bigint" for a, b in zip(t, v)),
            finite=", ".join(f"CASE WHEN {a}[1] + {b}[1] > 0 THEN abs({a}[2]) < 'Infinity'::float8 AND "
                             f"abs({b}[2]) < 'Infinity'::float8 AND {a}[3] < 'Infinity'::float8 AND "
                             f"{b}[3] < 'Infinity'::float8 END" for a, b in zip(t, v)),
            means=", ".join(f"{a}[2] / nullif({a}[1], 0)" for a in t),
            variances=", ".join(f"CASE WHEN {a}[1] > 0 THEN greatest({a}[1] * {a}[3] - {a}[2] * {a}[2], 0) "
                                f"/ ({a}[1] * {a}[1]) END" for a in t))

    async def segment_keys(self, conn: asyncpg.Connection) -> dict[int, int]:
        await conn.execute(self.template("segment_keys.sql"))
        return {r["segment"]: r["dist_key"] for r in await conn.fetch(self.template("segment_keys_read.sql"))}

    async def fill_pack(self, dsn, spec, workers, source):
        """One statement packs on every segment at once, each segment its own rows, in the
        transaction the profile read the source in (``source.conn``): the same moment. The pack
        is visible to others once that transaction commits (packing.ensure_pack ends it before it
        records the pack)."""
        conn = source.conn
        await conn.execute(self.template("pack_session.sql"))
        if spec.columns >= WIDE_PACK_COLUMNS:
            await conn.execute(self.template("pack_wide.sql"))
        keys = await self.segment_keys(conn)
        key_map = ", ".join(f"({s}, {k})" for s, k in sorted(keys.items()))
        await conn.execute(self.render(
            "pack_stage.sql", key=self.row_key("t", spec.seed, spec.is_table), source=spec.source,
            x_bytes=spec.x_bytes, y_bytes=spec.y_bytes, modulus=VALIDATION_MODULUS, cut=spec.validation_cut,
            buckets=spec.buckets, validation_buckets=spec.validation_buckets, key_map=key_map))
        await conn.execute(self.render("pack_buffers.sql", table=spec.table))
        await conn.execute(self.render("pack_markers.sql", table=spec.table, key_map=key_map))

    async def create_pack(self, conn, spec):
        await conn.execute(self.render("pack_create.sql", table=spec.table))

    async def finish_pack(self, conn, spec):
        """The markers were written with the buffers (they need the segment keys)."""

    def hop_statements(self, segment, pack_id, pack_table, stream=False):
        """The warm-up and the hop are function calls (hop_functions.sql): their statements run in
        the session's writer process on the segment, whose GD holds the cached data and models."""
        if not all(c in "0123456789abcdef" for c in pack_id):
            raise ValueError(f"not a pack id: {pack_id!r}")
        rows = "stream" if stream else "cached"
        return HopStatements(
            sizes=self.render("model_sizes.sql", segment=int(segment)),
            warmup=self.render("warmup.sql", segment=int(segment), pack_id=pack_id,
                               rows="markers" if stream else "cached"),
            hop=self.render("hop.sql", segment=int(segment), checkpoint="false", rows=rows),
            checkpoint=self.render("hop.sql", segment=int(segment), checkpoint="true", rows=rows),
        )

    async def run_hop(self, conn, statements, run_id, model_id, epoch, last_of_epoch, params, hops, checkpoint=False):
        """One call (ctq.gp_hop) in a transaction of its own (see write()): the state moves segment
        to segment, trains and is stored on the hop's segment, the hop is recorded. It is given
        every segment's distribution key (found once, :meth:`segment_keys`), which it would
        otherwise look up twice a hop."""
        if self.keys is None:
            found = await self.segment_keys(conn)
            self.keys = [found[s] for s in range(len(found))]
        async with conn.transaction():
            return await conn.fetchrow(statements.checkpoint if checkpoint else statements.hop, run_id, model_id, epoch,
                                       last_of_epoch, params, hops, self.keys)

    async def prepare_scoring(self, conn, spec: ScoreSpec, run_id, model_id, params):
        """Stage the rows to score where they are: each row, as its feature bytes, tagged with its
        own segment's distribution key (it stays on its segment, as in packing), one header row
        per segment with that segment's parameters, and the model's state parts copied to every
        segment from where they lie (ctq.stage_state: segment to segment). A function on a
        segment cannot read the source or the state tables; the targeted query then reads the stage."""
        keys = await self.segment_keys(conn)
        key_map = ", ".join(f"({s}, {k})" for s, k in sorted(keys.items()))
        await conn.execute(self.render("score_stage.sql", stage=spec.stage, id=spec.id, x_bytes=spec.x_bytes,
                                       y_bytes=spec.y_bytes, source=spec.source, key_map=key_map))
        for segment, segment_params in enumerate(params):
            await conn.execute(self.render("score_header.sql", stage=spec.stage, dist_key=int(keys[segment])),
                               segment_params)
        await conn.execute(self.render("score_state.sql", stage=spec.stage), run_id, model_id,
                           [int(keys[s]) for s in range(len(params))])
        return [() for _ in params]

    def score_query(self, spec, segment):
        return self.render("score_query.sql", stage=spec.stage, segment=int(segment))

    async def finish_scoring(self, conn, spec):
        await conn.execute(self.render("drop_table.sql", table=spec.stage))

    async def doctor_checks(self, conn, probe):
        """On Greenplum: PL/Python and Keras *on every primary segment* (their versions the client's),
        and whether a targeted training query is direct-dispatched (EXPLAIN of one, on the newest pack,
        or on a probe pack created in a transaction that is rolled back)."""
        from ctq.doctor import Check, version_check

        checks = []
        fix = ("install keras + jax on every segment host, readable by the cluster's OS user, and run "
               "`ctq install --python-path <site-packages>`")
        try:
            rows = await conn.fetch(self.template("probe_segments.sql"))
            bad = [r["segment"] for r in rows if r["probe"] is None]
            probes = [json.loads(r["probe"]) for r in rows if r["probe"]]
            versions = sorted({p["keras"] for p in probes})
            checks.append(Check("keras on segments", not bad and bool(rows),
                                f"{len(rows)} primary segments; keras {', '.join(versions) or '-'}", fix))
            if probes:
                checks.append(version_check("segments", probes))
        except asyncpg.PostgresError as exc:
            checks.append(Check("keras on segments", False, exc.message.splitlines()[0], fix))
        pack = await conn.fetchrow(self.template("newest_pack.sql"))
        try:
            async with conn.transaction():
                if pack is None:  # a probe pack of the same layout, gone with the rollback
                    pack = {"pack_id": "0" * 16}
                    await conn.execute(self.render("pack_create.sql", table=f"ctq_data.pack_{pack['pack_id']}"))
                    await conn.execute(self.render("probe_pack_rows.sql", table=f"ctq_data.pack_{pack['pack_id']}"))
                query = await conn.fetchval(self.template("train_query_text.sql"), pack["pack_id"])
                plan = [r[0] for r in await conn.fetch("EXPLAIN " + query, "{}")]
                raise _RollBack
        except _RollBack:
            pass
        except asyncpg.PostgresError as exc:
            checks.append(Check("direct dispatch", False, f"cannot show the plan: {exc.message.splitlines()[0]}",
                                "run ctq doctor as the installer (a probe pack table is created, then rolled back)"))
            return checks
        direct = plan[0].startswith("Gather Motion 1:1") and "segments: 1)" in plan[0] and \
            not any("Motion" in line for line in plan[1:])
        checks.append(Check("direct dispatch", direct,
                            f"training query of segment 0 (pack {pack['pack_id']}):\n      " + "\n      ".join(plan),
                            "the plan should be Gather Motion 1:1 (slice1; segments: 1) with no Motion below the "
                            "aggregate; check gp_enable_direct_dispatch and the Greenplum version (6.20+)"))
        return checks

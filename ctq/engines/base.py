"""The engine interface: what ctq needs from a database engine.

:class:`Engine` holds what every engine does alike (connections, templates, reading a stored
state) and declares, abstract, what each engine decides for itself: how many segments a run gets,
the row keys, how a pack is built, a hop's statements, how rows are scored, its own doctor checks.
An engine implements those in its module (``ctq/engines/<name>.py``) and its SQL in
``sql_templates/<name>/``, looked up before ``sql_templates/common/`` (as dbt adapters dispatch
their macros). A new engine that behaves like PostgreSQL in part says so by subclassing
:class:`~ctq.engines.postgres.PostgresEngine`: nothing is inherited silently from this base."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from dataclasses import dataclass

import asyncpg

from ctq.connection import Snapshot, snapshot
from ctq.connection import connect as open_connection
from ctq.sql import render, template

VALIDATION_MODULUS = 1_000_000  # a row is held out when |key mod 1e6| < fraction x 1e6


@dataclass(frozen=True)
class PackSpec:
    """What one pack is made of; every SQL string in it is already quoted or generated."""

    pack_id: str
    table: str           # schema-qualified, quoted pack table
    source: str          # schema-qualified, quoted source relation
    is_table: bool       # a table has row identities (ctid); a view is keyed by its content
    x_bytes: str         # SQL: the row's features as bytes (float4send... or array_send)
    y_bytes: str         # SQL: the row's label as big-endian float4
    seed: int
    validation_cut: int  # key mod VALIDATION_MODULUS below this: a validation row
    segments: int
    buckets: int         # buffers per training segment
    validation_buckets: int
    columns: int = 1     # source columns the row's encoding reads (x_bytes' terms: 1 for an array column)


@dataclass(frozen=True)
class ScoreSpec:
    """The rows a model scores (``ctq predict``, ``ctq evaluate``); SQL strings already quoted."""

    source: str          # schema-qualified, quoted relation to score
    is_table: bool       # a table has row identities (ctid); a view is keyed by its content
    id: str              # SQL: the row's id (``t."id"``; ``NULL::int`` when no id is needed)
    id_type: str         # its SQL type
    x_bytes: str         # SQL: the row's features as packing writes them (packing.feature_bytes_sql)
    y_bytes: str         # SQL: the row's label as packing writes it, or ``NULL::bytea``
    segments: int
    stage: str           # a free schema-qualified, quoted table name the engine may stage rows in


@dataclass(frozen=True)
class HopStatements:
    """The SQL one segment's connection runs, built once per run (:meth:`Engine.hop_statements`):
    ``sizes`` (the memory check's model sizes), ``warmup`` (compile and time the run's models),
    ``hop`` and ``checkpoint`` (train and record one hop, its new state stored as the model's
    working state or as its checkpoint; run by :meth:`Engine.run_hop`)."""

    sizes: str
    warmup: str
    hop: str
    checkpoint: str


PRELOAD_END_SECONDS = 5.0  # the most a cancelled preload waits to end its backends


async def end_preloads(dsn: str, backends: list[tuple[int, str]]) -> None:
    """Terminate the preload ``backends`` ((pid, application_name) each) of a run that will not
    use them. Closing a connection does not stop its backend's statement: a backend notices a
    client that left only when it next writes to it, and one importing Keras went on for a second
    of CPU each after a refused run had exited. ctq.probe lets a terminate in while it imports
    (indb.import_keras_interruptibly). Best effort, in a session of its own (the run's may be
    the failed one): a backend left over ends once its import does, as before."""
    if not backends:
        return
    with contextlib.suppress(Exception):
        conn = await asyncio.wait_for(open_connection(dsn, "ctq preload end"), PRELOAD_END_SECONDS)
        try:
            for pid, name in backends:
                await conn.fetchval(template("end_backend.sql"), pid, name, timeout=PRELOAD_END_SECONDS)
        finally:
            conn.terminate()


class Engine(abc.ABC):
    """One database engine. A subclass sets ``name`` (its folder of ``sql_templates/``) and ``title``
    (what users read) and implements every abstract method."""

    name: str
    title: str
    #: the statements split over sessions (profile and packing workers, row check and scoring
    #: segments) share one exported snapshot (False: the engine does each in one session)
    exports_snapshots = True
    #: after an error inside a hop, give the segment a new connection instead of reusing its own
    reconnect_after_error = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not (getattr(cls, "name", None) and getattr(cls, "title", None)):
            raise TypeError(f"engine {cls.__name__} must set name and title")

    # -- connections -----------------------------------------------------------------------------
    async def segment_connection(self, dsn: str, application_name: str) -> asyncpg.Connection:
        """A connection for one segment's targeted queries (training or scoring), with the
        engine's session settings (session.sql) applied."""
        conn = await open_connection(dsn, application_name)
        session = self.template("session.sql")
        if session.strip():
            await conn.execute(session)
        return conn

    async def preload(self, dsn: str, segments: int) -> list[asyncpg.Connection | None]:
        """Each segment's connection, opened ahead, its backend (on Greenplum the segment's process
        that will train) having imported Keras (preload.sql, about 2 s a backend): started while
        the source is checked and packed, so that the coordinator's warm-up finds it done. A
        segment whose connection or import failed gets None: the coordinator opens its own and
        reports the failure in its warm-up. Cancelled (the run was refused or interrupted), it
        ends the backends still importing (:func:`end_preloads`)."""
        started: dict[int, tuple[int, str]] = {}  # segment -> (its backend's pid, application_name)

        async def one(segment: int) -> asyncpg.Connection | None:
            name = f"ctq segment {segment} (preloading)"
            try:
                conn = await self.segment_connection(dsn, name)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                return None
            try:
                started[segment] = (await conn.fetchval(template("backend_pid.sql")), name)
                await conn.fetchval(self.render("preload.sql", segment=int(segment)))
                return conn
            except BaseException:
                conn.terminate()
                if asyncio.current_task().cancelling():
                    raise
                return None

        try:
            return list(await asyncio.gather(*(one(s) for s in range(segments))))
        except asyncio.CancelledError:
            await end_preloads(dsn, list(started.values()))
            raise

    def snapshot(self, dsn: str):
        """An async context manager yielding the :class:`ctq.connection.Snapshot` that one
        preparation (profile + packing, or row check + scoring) reads the source through."""
        return snapshot(dsn, export=self.exports_snapshots)

    async def attach(self, conn: asyncpg.Connection) -> None:
        """Read from the server what the engine's statements need before a run builds them
        (:meth:`hop_statements`; on Citus each segment's distribution key). Nothing by default."""

    # -- templates -------------------------------------------------------------------------------
    def template(self, name: str) -> str:
        return template(name, self.name)

    def render(self, name: str, **values: object) -> str:
        return render(name, self.name, **values)

    @property
    def catalog(self) -> str:
        """The schema of the run and pack tables (catalog_schema.sql): a statement's ``{{catalog}}``."""
        return self.template("catalog_schema.sql").strip()

    @property
    def working_states_in_files(self) -> bool:
        """Whether a model's working state is a file on the server (working_states_files.sql), which
        the hop's backend reads itself, rather than rows the hop statement reads
        (working_states_rows.sql): ``working_state_store.sql`` says which."""
        return self.template("working_state_store.sql").strip() == "files"

    def is_transient(self, exc: BaseException) -> bool:
        """Engine-specific failures worth a reconnect and a retry (beyond the connection errors and
        SQLSTATE classes every engine shares, see coordinator.is_transient)."""
        return False


    # -- segments --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def segments(self, conn: asyncpg.Connection, requested: int | None, default: int) -> tuple[int, str | None]:
        """How many segments a run gets (``requested``: grid.yaml's ``segments``, or None for
        ``default``), and a notice for the user if their setting is not used."""

    @abc.abstractmethod
    async def write(self, conn: asyncpg.Connection, name: str, *args: object) -> object:
        """Run the catalog-changing statement ``name`` (a template) with bind ``args``, under the
        engine's rule for who may change which rows; returns its first value."""

    # -- row identity: reproducible shuffle, validation split, content fingerprint -----------------
    @abc.abstractmethod
    def row_key(self, alias: str, seed: int, is_table: bool) -> str:
        """SQL for a deterministic int8 key per row of ``alias``, seeded: it orders the shuffle,
        picks the validation rows and the row's bucket (``setseed()``/``random()`` would not do:
        they are not reproducible across scans)."""

    @abc.abstractmethod
    def row_version(self, alias: str, is_table: bool) -> str:
        """SQL for an int8 that changes whenever the row changes (summed into the fingerprint)."""

    async def profile_statement(self, conn: asyncpg.Connection, slots: list[str], **values: str) -> str:
        """The source profile statement (source_profile.sql, its other ``values`` given), with the
        statistics of each batch slot in ``slots`` (float8 SQL expressions of the batch row ``c``)
        as SQL lists in slot order: ``counts`` (non-NULL values), ``finite`` (no NaN or infinity
        among them; NULL where all are NULL), ``means`` and ``variances`` (population) of the
        training rows (those where ``c.ctq_validation`` is false). ``conn`` may be read (an engine
        may use what its installed version provides); it is not written."""
        training = "FILTER (WHERE NOT c.ctq_validation)"
        return self.render(
            "source_profile.sql", **values,
            counts=", ".join(f"count({x})" for x in slots),
            finite=", ".join(f"(min({x}) > '-Infinity'::float8 AND max({x}) < 'Infinity'::float8)"
                             for x in slots),  # (NaN sorts above every number: max is NaN)
            # (avg and var_pop of one input share one transition state, since PostgreSQL 10)
            means=", ".join(f"avg({x}) {training}" for x in slots),
            variances=", ".join(f"var_pop({x}) {training}" for x in slots))

    # -- packing ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_pack(self, conn: asyncpg.Connection, spec: PackSpec) -> None:
        """Create the (empty) pack table ``spec.table``, laid out so each segment's rows are its own."""

    @abc.abstractmethod
    async def fill_pack(self, dsn: str, spec: PackSpec, workers: int, source: Snapshot) -> None:
        """Write the pack's buffers from the ``source`` snapshot (the rows the profile read), with
        up to ``workers`` of the server's processes."""

    @abc.abstractmethod
    async def finish_pack(self, conn: asyncpg.Connection, spec: PackSpec) -> None:
        """Write whatever the pack needs after its buffers (e.g. each segment's marker row)."""

    # -- training --------------------------------------------------------------------------------
    @abc.abstractmethod
    def hop_statements(self, segment: int, pack_id: str, pack_table: str, stream: bool = False) -> HopStatements:
        """The statements of ``segment``'s connection for a run on pack ``pack_id``; ``stream``: the
        segment's data does not fit its memory budget and is read anew by every hop."""

    @abc.abstractmethod
    async def run_hop(self, conn: asyncpg.Connection, statements: HopStatements, run_id: int, model_id: int,
                      epoch: int, last_of_epoch: bool, params: str, hops: int,
                      checkpoint: bool = False) -> asyncpg.Record | None:
        """Train and record one hop of ``model_id`` (``hops``: the hops it has trained before;
        ``params``: JSON): its new state is stored inside the database (never through the client)
        as the model's working state, or with ``checkpoint`` as its checkpoint, and the hop is
        recorded entirely or not at all. Returns the hop's row (loss, metric, rows, seconds...)."""

    async def read_state(self, conn: asyncpg.Connection, run_id: int, model_id: int) -> list | None:
        """The arrays of a model's stored state (weights, then optimizer variables), or None for a
        model that has not trained; for export, which writes it into a file of the client's."""
        from ctq.indb import assemble_state

        rows = await conn.fetch(self.template("model_state.sql"), run_id, model_id)
        return assemble_state((r["array_index"], r["byte_offset"], r["data"]) for r in rows)


    # -- scoring ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def prepare_scoring(self, conn: asyncpg.Connection, spec: ScoreSpec, run_id: int, model_id: int,
                              params: list[str]) -> list[tuple]:
        """Make ``spec``'s rows and model ``model_id`` of run ``run_id`` scorable segment by
        segment; returns the bind arguments of each segment's :meth:`score_query` (``params``: the
        JSON parameters of each segment)."""

    @abc.abstractmethod
    def score_query(self, spec: ScoreSpec, segment: int) -> str:
        """The targeted scoring query of ``segment``: one row (ids, r), r a ``ctq.score_result``."""

    @abc.abstractmethod
    async def finish_scoring(self, conn: asyncpg.Connection, spec: ScoreSpec) -> None:
        """Drop whatever :meth:`prepare_scoring` staged."""

    # -- diagnosis -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def doctor_checks(self, conn: asyncpg.Connection, probe: dict) -> list:
        """``ctq doctor``'s checks of what this engine adds (``probe``: ctq.probe() of the
        coordinator's backend): a list of :class:`ctq.doctor.Check`."""

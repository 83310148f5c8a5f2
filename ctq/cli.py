"""The ``ctq`` command: a thin click layer over :mod:`ctq.api` and friends.

Exit codes: :data:`ctq.errors.EXIT_CODES` (in ``ctq --help`` and docs/cli.md). With ``--json`` a command prints exactly one JSON
document on stdout whatever the outcome (errors included: ``status``, ``error``, ``exit_code``,
``run_id``), and no live display.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
import sys
import traceback

import asyncpg
import click
from rich import box
from rich.console import Console
from rich.table import Table

from ctq import __version__, api
from ctq.config import MAX_SEGMENTS
from ctq.embedded import EmbeddedCluster, default_home, resolve_dsn
from ctq.errors import EXIT_CODES, CtqError, Interrupted, RunFailed, UsageError, from_database, plain_text
from ctq.search.base import MAX_MODELS

dsn_option = click.option("--dsn", envvar="CTQ_DSN", default=None,
                          help="PostgreSQL DSN (default: $CTQ_DSN, else the embedded database, started on demand).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


class DatabaseId(click.ParamType):
    """An id within its column's type (ctq.runs.run_id bigint, ctq.models.model_id int): a larger
    number is a usage error here, not a query the server refuses with an SQLSTATE message."""

    name = "integer"

    def __init__(self, bits: int):
        self.largest = 2 ** (bits - 1) - 1

    def convert(self, value, param, ctx):
        number = click.INT.convert(value, param, ctx)
        if not 0 <= number <= self.largest:
            self.fail(f"{value} is not an id (0 to {self.largest})", param, ctx)
        return number


RUN_ID = DatabaseId(64)
MODEL_ID = DatabaseId(32)


def _stdout() -> Console:
    """Tables on stdout; when it is a pipe or a file, wide enough that nothing gets cut."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _echo_json(doc) -> None:
    click.echo(plain_text(json.dumps(doc, indent=2, default=str)))


def _error_line(message: str) -> None:
    """One unwrapped line on stderr (coloured only on a terminal; click strips styles elsewhere)."""
    click.echo(click.style("error:", fg="red", bold=True) + " " + " ".join(plain_text(message).split()), err=True)


def _note(message: str) -> None:
    """Something the user should know that is not an error: one plain line on stderr."""
    click.echo("note: " + " ".join(plain_text(message).split()), err=True)


def _error_json(message: str, exit_code: int, run_id: int | None = None) -> None:
    status = {130: "interrupted", 1: "failed"}.get(exit_code, "error")
    _echo_json({"status": status, "error": " ".join(plain_text(message).split()), "exit_code": exit_code,
                "run_id": run_id})


def _while(what: str):
    """On a terminal (stderr), a spinner saying what a command is doing while it waits on the server
    (scoring and doctor wait seconds for the server's Keras import); elsewhere nothing."""
    import contextlib

    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    return Console(stderr=True).status(what)


def run_async(coro):
    """Run a coroutine; SIGINT, SIGTERM and SIGHUP cancel it, so each ends in a clean 'interrupted'.

    Both handlers are installed explicitly: a process started in the background by a
    non-interactive shell (CI, make, cron wrappers) inherits SIGINT as *ignored*, and Python's
    default Ctrl-C handling would then never fire.
    """

    # asyncio's warnings about the transport of a session the server ended ("socket.send() raised
    # exception.", once per write a COPY makes before it hears: 40 lines, a user trial) are not
    # ctq's message: that one is the error line
    logging.getLogger("asyncio").setLevel(logging.ERROR)

    async def main():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        # a closed terminal (SIGHUP) too, unless the command was started under nohup (ignored)
        hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
        signals = (signal.SIGINT, signal.SIGTERM, *hangup)
        for sig in signals:
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            raise Interrupted("interrupted") from None
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            # asyncpg's clean-up of a failed connection runs as its own task; let it end before the
            # loop closes, or it prints an "Event loop is closed" traceback after the error line
            others = asyncio.all_tasks() - {task}
            if others:
                await asyncio.wait(others, timeout=2)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def handle_errors(fn):
    """Turn ctq errors into a one-line message on stderr and the documented exit code; with
    ``--json``, also into the one JSON document on stdout (an unexpected error included)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = kwargs.get("as_json", False)
        try:
            try:
                return fn(*args, **kwargs)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, TimeoutError, socket.gaierror) as exc:
                raise from_database(exc) from exc
            except OSError as exc:  # a file of the user's (an --out, a PATH) the system refused: say which, why
                if exc.filename is None:
                    raise
                raise UsageError(f"{exc.filename}: {exc.strerror or exc}") from exc
        except CtqError as exc:
            _error_line(str(exc))
            if as_json:  # the run the error concerns: the one it names, else the one the command was given
                named = kwargs.get("run_id") if isinstance(kwargs.get("run_id"), int) else None
                _error_json(str(exc), exc.exit_code, exc.run_id if exc.run_id is not None else named)
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - a bug: keep its traceback, but a script still gets JSON
            if not as_json:
                raise
            traceback.print_exc()
            _error_json(f"internal error: {type(exc).__name__}: {exc}", 1)
            sys.exit(1)

    return wrapper


class _ReaderMayLeave:
    """sys.stdout / sys.stderr for a command whose reader may go away (``ctq train | head -3``, a
    log pipe that closes): the first write that finds the pipe closed sends the rest to /dev/null,
    so the run goes on and ends as it would have (its results are in the catalog), instead of a
    BrokenPipeError in the middle of it leaving the run stale."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)


def _closed_streams_to_devnull() -> None:
    """A command started with stdout or stderr closed (``2>&-``, a daemon without them): Python
    gives it None, every write raised, and the command did nothing, printed nothing and exited
    120 (a user trial). The closed descriptor is opened on /dev/null, as a reader that left
    (_ReaderMayLeave): the command runs, and no socket ctq opens can take descriptor 1 or 2."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        setattr(sys, name, open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False))


class JsonAwareGroup(click.Group):
    """Usage errors that click itself detects (an unknown option, a missing argument, ``--limit
    -1``) are one line like every other error, naming the fix (``see: ctq CMD --help``) instead of
    click's four-line usage block, exit code 2; with ``--json``, also the JSON document on stdout."""

    def main(self, args=None, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in args
        if not isinstance(sys.stdout, _ReaderMayLeave):
            _closed_streams_to_devnull()
            for stream in (sys.stdout, sys.stderr):  # a run name that the terminal's charset (LANG=C,
                if hasattr(stream, "reconfigure"):  # PYTHONIOENCODING=ascii) cannot show: escaped, not a traceback
                    stream.reconfigure(errors="backslashreplace")
            sys.stdout, sys.stderr = _ReaderMayLeave(sys.stdout), _ReaderMayLeave(sys.stderr)
        try:
            code = super().main(args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `ctq`, `ctq db`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "ctq"
            message = f"{exc.format_message()} (see: {where} --help)"
            _error_line(message)
            if as_json:
                _error_json(message, exc.exit_code)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            if as_json:
                _error_json(exc.format_message(), exc.exit_code)
            sys.exit(exc.exit_code)
        except click.Abort:
            if as_json:
                _error_json("interrupted", 130)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)  # --help, --version, ctx.exit(n): their code


def _epilog() -> str:
    """ctq --help's epilog: the database and the exit codes (:data:`ctq.errors.EXIT_CODES`)."""
    import textwrap

    codes = []
    for code, meaning, action in EXIT_CODES:
        lines = textwrap.wrap(meaning + (f"; {action}" if action else ""), 73)
        codes += [f"  {code:<4} {lines[0]}", *(f"       {line}" for line in lines[1:])]
    return "\n".join([
        "\b", "Database: --dsn, else $CTQ_DSN (a libpq URL), else the embedded PostgreSQL",
        "under $CTQ_HOME (default /var/lib/ctq as root, ~/.local/share/ctq otherwise),", "started on demand.", "",
        "\b", "Exit codes:", *codes,
        "With --json, every outcome prints one JSON document on stdout, errors included:",
        '{"status", "error", "exit_code", "run_id"}.', ""])


EPILOG = _epilog()


@click.group(cls=JsonAwareGroup, epilog=EPILOG)
@click.version_option(__version__, prog_name="ctq")
def main() -> None:
    """Keras model selection by Model Hopper Parallelism, inside your PostgreSQL database."""


# ------------------------------------------------------------------------------------------ db
@main.group()
def db() -> None:
    """The embedded PostgreSQL (under $CTQ_HOME) used when no --dsn is given."""


@db.command("start")
@handle_errors
def db_start() -> None:
    """Create (first time) and start the embedded database; prints its DSN."""
    click.echo(EmbeddedCluster(default_home()).start())


@db.command("stop")
@handle_errors
def db_stop() -> None:
    """Stop the embedded database (its data stays)."""
    stopped = EmbeddedCluster(default_home()).stop()
    click.echo("stopped" if stopped else "not running")


@db.command("status")
@json_option
@handle_errors
def db_status(as_json: bool) -> None:
    """Where the embedded database lives and whether it runs. Exit 1 when it is not running, 3 when
    that cannot be told (another user's home, unreadable: the line says so)."""
    status = EmbeddedCluster(default_home()).status()
    if as_json:
        _echo_json(status)
    else:
        for key, value in status.items():
            click.echo(f"{key:>15}: {value}")
    if status.get("running") is None:
        click.echo(f"error: {status['problem']}", err=True)
        sys.exit(3)
    sys.exit(0 if status.get("running") else 1)


@db.command("url")
@handle_errors
def db_url() -> None:
    """Print the embedded database's DSN (for psql or --dsn)."""
    click.echo(EmbeddedCluster(default_home()).dsn)


# ------------------------------------------------------------------------------------ install
@main.command()
@dsn_option
@click.option("--python-path", multiple=True,
              help="Directory the server's PL/Python should put first on sys.path (site-packages with "
                   "keras); repeatable. Not needed for the embedded database.")


@handle_errors
def install(dsn: str | None, python_path: tuple[str, ...]) -> None:
    """Create or upgrade schema ctq and its in-database functions (idempotent).

    Refused while a run is live (exit 3): run it again once none is (ctq runs)."""
    sha = run_async(api.install(resolve_dsn(dsn), list(python_path) or None))
    click.echo(f"ctq {__version__} installed (server code {sha[:12]})")


@main.command()
@click.argument("role")
@click.option("--admin", is_flag=True, help="Make ROLE a ctq administrator (ctq_admin: sees every run).")
@dsn_option
@handle_errors
def grant(role: str, admin: bool, dsn: str | None) -> None:
    """Let ROLE (an existing login role) use ctq: membership of ctq_user (or ctq_admin).

    ROLE still needs SELECT on each source table it trains on (GRANT SELECT ... TO ROLE)."""
    group, changed = run_async(api.grant(resolve_dsn(dsn), role, admin=admin))
    click.echo(f"granted {group} to {role}" if changed else f"{role} is already a member of {group}")


@main.command()
@click.argument("role")
@click.option("--admin", is_flag=True, help="Remove ROLE from ctq_admin (instead of ctq_user).")
@dsn_option
@handle_errors
def revoke(role: str, admin: bool, dsn: str | None) -> None:
    """Take the use of ctq away from ROLE (its runs stay, visible to administrators)."""
    group, changed = run_async(api.grant(resolve_dsn(dsn), role, admin=admin, revoke=True))
    click.echo(f"revoked {group} from {role}" if changed else f"{role} was not a member of {group}: nothing to revoke")


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.argument("roles", nargs=-1, required=True)
@click.option("--revoke", is_flag=True, help="Stop sharing the run with these roles.")
@dsn_option
@handle_errors
def share(run_id: int, roles: tuple[str, ...], revoke: bool, dsn: str | None) -> None:
    """Let members of ROLES read run RUN_ID (models, hops, leaderboard, states), read-only.

    Only the run's owner or an administrator may share it; readers cannot resume or change it."""
    shared = run_async(api.share(resolve_dsn(dsn), run_id, list(roles), revoke=revoke))
    click.echo(f"run {run_id} is shared with: {', '.join(shared) if shared else 'no one'}")


# ------------------------------------------------------------------------------------- doctor
@main.command()
@dsn_option
@json_option
@handle_errors
def doctor(dsn: str | None, as_json: bool) -> None:
    """Check the database, PL/Python and Keras inside the server; explain how to fix problems.

    Reads only: it never installs or upgrades anything. Exit 3 when a check fails.
    """
    from ctq.doctor import run_checks

    with _while("checking the server: its PL/Python imports Keras and builds a model (a few seconds)"):
        checks = run_async(run_checks(dsn))
    failed = [c for c in checks if not c.ok]
    if as_json:
        _echo_json([c.__dict__ for c in checks])
    else:
        table = Table(show_header=False, box=None)
        for c in checks:
            table.add_row("[green]ok[/]" if c.ok else "[red]FAIL[/]", c.name, c.detail)
        _stdout().print(table)
        for c in failed:
            click.echo(click.style(f"{c.name}:", fg="red") + f" {c.fix}", err=True)
    sys.exit(3 if failed else 0)


# --------------------------------------------------------------------------------------- load
@main.command()
@click.argument("csv_file", type=click.Path(dir_okay=False))
@click.option("--table", required=True, help="Table to create, e.g. public.iris (exact name, as in grid.yaml).")
@click.option("--replace", is_flag=True, help="Replace the table if it exists (only once the new one has loaded).")
@click.option("--delimiter", default=None, metavar="CHAR",
              help="Field delimiter, as COPY's DELIMITER (default: detected among , ; tab |; '\\t' or 'tab' for a tab).")


@click.option("--null", "null", default=None, metavar="STRING",
              help="The one string that means NULL, as COPY's NULL (default: empty, NA, N/A, NULL, NaN, None "
                   "in number and boolean columns, empty in text columns).")


@click.option("--encoding", default=None, metavar="NAME",
              help="File encoding, e.g. cp1252 or latin-1 (default: UTF-8, or what a byte-order mark says).")


@click.option("--distributed-by", "distributed_by", default=None, metavar="COLUMN",
              help="Greenplum: distribute the table by this column of the file (default: randomly); "
                   "checked but without effect on PostgreSQL.")


@dsn_option
@handle_errors
def load(csv_file: str, table: str, replace: bool, delimiter: str | None, null: str | None,
         encoding: str | None, distributed_by: str | None, dsn: str | None) -> None:
    """Load a CSV file (or .csv.gz, .bz2, .xz; .zst with the zstandard package) with a header row into
    a new table, as a stream through COPY; says what it created, refuses what it would misread, and
    leaves nothing behind when it fails."""
    from ctq.loader import load_csv, parse_delimiter, parse_table
    from ctq.progress import load_progress

    delimiter = parse_delimiter(delimiter)
    parse_table(table)

    async def go():
        async with api.connect(resolve_dsn(dsn)) as conn:
            with load_progress(csv_file) as progress:
                return await load_csv(conn, csv_file, table, delimiter=delimiter, null=null, encoding=encoding,
                                      replace=replace, distributed_by=distributed_by, progress=progress)

    result = run_async(go())
    click.echo(result.summary())
    for note in result.notes:
        _note(note)


# -------------------------------------------------------------------------------------- train
@main.command()
@click.argument("grid", type=click.Path(dir_okay=False), required=False)
@dsn_option
@json_option
@click.option("--name", default=None, help="Run name (default: the config's name); with GRID --resume, "
                                         "resumes the newest unfinished run of that name.")


@click.option("--schedule", type=click.Choice(["mop", "mop-fixed", "bsp"]), default=None,
              help="mop (default): asynchronous model hopping, fastest; mop-fixed: MOP with every model's "
                   "segment order fixed by the seed, so a rerun reproduces the weights; bsp: MADlib-style "
                   "rounds, for comparison.")


@click.option("--reproducible", is_flag=True, help="Same as --schedule mop-fixed.")
@click.option("--scheduling", type=click.Choice(["cost", "random"]), default=None,
              help="MOP's choice among the models a free segment could take: cost (default, or the "
                   "config's scheduling:): most estimated work left first, from "
                   "the warm-up's timing and the observed hop durations; random: a seeded preference "
                   "(Cerebro's rule). MOP only.")
@click.option("--resume", "resume", default=None, is_flag=False, flag_value="last", metavar="[RUN_ID|auto]",
              help="Continue an unfinished run: --resume RUN_ID, or GRID --resume for the newest "
                   "unfinished run of that configuration (and --name); GRID --resume auto resumes the newest "
                   "run of that configuration if its work is not done and starts a new run otherwise (for cron "
                   "jobs).")


@click.option("--keep-pack", is_flag=True,
              help="With --resume: go on with the run's pack even though its source has changed since "
                   "(without it, such a resume is refused).")
@click.option("--quiet", "-q", is_flag=True, help="No progress at all (errors still go to stderr).")
@click.option("--verbose", "-v", is_flag=True, help="Without a terminal, also log every hop.")
@handle_errors
def train(grid: str | None, dsn: str | None, as_json: bool, name: str | None, schedule: str | None,
          reproducible: bool, scheduling: str | None, resume: str | None, keep_pack: bool, quiet: bool,
          verbose: bool) -> None:
    """Train every model of GRID (a grid.yaml) with MOP and print the leaderboard.

    On a terminal, progress is a live display; otherwise (cron, make, a log file) it is plain
    timestamped lines on stderr: stages, each model's epochs with metrics, and an ETA.
    """
    from ctq.config import load_config
    from ctq.progress import LiveProgress, LogProgress, log_line

    if grid is None and resume in (None, "last"):
        raise UsageError("give a GRID file, or --resume RUN_ID")
    if quiet and verbose:
        raise UsageError("--quiet and --verbose contradict each other; give one")
    if reproducible:
        if schedule not in (None, "mop-fixed"):
            raise UsageError(f"--reproducible means --schedule mop-fixed; it contradicts --schedule {schedule}")
        schedule = "mop-fixed"
    if scheduling and schedule not in (None, "mop"):
        raise UsageError(f"--scheduling chooses among eligible models under MOP; --schedule {schedule} "
                         "decides by its own order")
    if keep_pack and resume is None:
        raise UsageError("--keep-pack only applies to --resume (a new run packs the source as it is)")
    if resume == "auto" and grid is None:
        raise UsageError("--resume auto needs a GRID file: it resumes that configuration's unfinished run")
    config = load_config(grid) if grid else None  # configuration errors before any database work
    if resume == "auto":
        auto = run_async(api.run_to_resume(resolve_dsn(dsn), config, name))
        resume = None if auto is None else str(auto)
    run_id = None
    if resume not in (None, "last"):
        try:
            run_id = RUN_ID.convert(resume, None, None)
        except click.BadParameter:
            raise UsageError(f"--resume takes a run id or auto, got {resume!r}") from None
    factory = log = None
    if not quiet and not as_json and sys.stdout.isatty():
        factory = LiveProgress
        log = log_line  # checking and packing come before the live view starts
    elif not quiet:
        factory = functools.partial(LogProgress, verbose=verbose)
        log = log_line
    shown: list[str] = []  # notices already printed while the run went on

    def notify(message: str) -> None:
        shown.append(message)
        _note(message)

    if resume is None:
        work = api.train(config, resolve_dsn(dsn), name=name, schedule=schedule or "mop", scheduling=scheduling,
                         progress_factory=factory, log=log, notify=notify)
    else:
        work = api.resume(resolve_dsn(dsn), run_id, config, progress_factory=factory, name=name, schedule=schedule,
                          scheduling=scheduling, keep_pack=keep_pack, log=log, notify=notify)
    result = run_async(work)
    if not as_json:
        for notice in result.notices:
            if notice not in shown:
                _note(notice)
    failure = f"{len(result.failed_models)} of {len(result.leaderboard)} models failed" if result.failed_models else None
    if as_json:
        _echo_json({**result.to_json(), "error": failure, "exit_code": 1 if failure else 0})
    else:
        _print_leaderboard(result.leaderboard, title=f"run {result.run_id} ({result.name}): {result.status}")
        figures = ("" if not result.schedule_seconds
                   else f" (hop schedule {result.schedule_seconds:.1f}s: segment utilization "
                        f"{result.utilization:.1%}, compute share {result.compute_share:.1%})")
        click.echo(f"{result.hops} hops in {result.wall_seconds:.1f}s{figures}; "
                   f"best {result.metric} = "
                   + ("-" if result.best_metric is None else f"{result.best_metric:.4f}") + f" ({result.best_model})")
        if result.run_hops != result.hops:
            click.echo(f"whole run: {result.run_hops} hops, {result.run_wall_seconds:.1f}s since it started")
    if failure:
        if as_json:  # (the leaderboard, which says why each failed, is not printed)
            for model_id, reason in result.failed_models.items():
                click.echo(click.style(f"model {model_id} failed:", fg="red") + " "
                           + " ".join(plain_text(reason).split()), err=True)
        else:  # one line: each model's reason is under the leaderboard (it was said twice: a user trial)
            click.echo(f"error: run {result.run_id}: {failure} (why: under the leaderboard); the others trained "
                       "and are ranked", err=True)
        sys.exit(RunFailed.exit_code)


def _print_leaderboard(rows: list[dict], title: str) -> None:
    """Rank, name and score always show: on a narrower terminal the secondary columns are left
    out (under 100 columns the train loss and val metric, under 70 all but those three) and a long
    model name wraps, rather than the name or the score being cut to '…' or dropped."""
    console = _stdout()
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("model", overflow="fold", ratio=1, min_width=8)
    table.add_column("score", justify="right", no_wrap=True)
    extra = ("status", "epochs", "train loss", "val loss", "val metric") if console.width >= 100 else \
        ("status", "epochs", "val loss") if console.width >= 70 else ()
    for col in extra:
        table.add_column(col, justify="left" if col == "status" else "right", no_wrap=True)

    def f(v):
        return "-" if v is None else f"{v:.4f}"

    cells = {"status": lambda r: r["status"], "epochs": lambda r: str(r["epochs_done"]),
             "train loss": lambda r: f(r["train_loss"]), "val loss": lambda r: f(r["val_loss"]),
             "val metric": lambda r: f(r["val_metric"])}
    for r in rows:
        table.add_row(str(r["rank"]), r["name"], f(r["score"]), *(cells[col](r) for col in extra))
    console.print(table)
    for r in rows:  # why a model failed (a stopped model's reason: --json, ctq report, ctq.decisions)
        if r["status"] == "failed" and r.get("message"):
            console.print(f"model {r['model_id']} ({r['name']}) failed: {r['message']}", markup=False,
                          highlight=False)


# ------------------------------------------------------------------------------- runs, models
RUN_STATUSES = ("running", "stale", "succeeded", "failed", "interrupted")


@main.command()
@dsn_option
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many runs.")
@click.option("--status", type=click.Choice(RUN_STATUSES), default=None,
              help="Only runs with this status (stale: running, but its coordinator is gone).")


@click.option("--name", "name", default=None, metavar="PATTERN",
              help="Only runs whose name matches PATTERN: * any text, ? one character (e.g. 'nightly*').")


@handle_errors
def runs(dsn: str | None, as_json: bool, limit: int, status: str | None, name: str | None) -> None:
    """List runs, newest first. A run whose coordinator is gone is 'stale': resume it."""
    dsn = resolve_dsn(dsn)
    rows = run_async(api.runs(dsn, limit, status=status, name=name))
    if not rows and not run_async(api.installed(dsn)):  # an empty list alone hid a wrong database name
        _note("ctq is not installed in this database yet: the first `ctq train` (or `ctq install`) installs it; "
              "is it the database you meant?")
    if as_json:
        _echo_json(rows)
        return
    if not rows:  # a line, not a table of headers alone
        filters = [f for f in (status and f"status {status}", name and f"name {name!r}") if f]
        click.echo(f"no runs{' with ' + ' and '.join(filters) if filters else ''}")
        return
    console = _stdout()
    # narrower: the start time and model count make room for the rest; under 80 columns, the run,
    # its name, status and best score alone (cut to '…' or squeezed out, they were unreadable)
    wide = console.width >= 120
    table = Table(box=box.SIMPLE_HEAD)
    cols = ["run", "name", "status", "best"] if console.width < 80 else \
        ["run", "name", "status", "schedule"] + (["started"] if wide else []) + ["wall s"] + \
        (["models"] if wide else []) + ["hops", "best model", "best"]
    for col in cols:
        folds = col in ("name", "status", "best model")
        table.add_column(col, overflow="fold" if folds else "ellipsis", no_wrap=not folds,
                         justify="right" if col in ("run", "wall s", "models", "hops", "best") else "left")
    for r in rows:
        status = r["status"]
        if status == "stale":
            status = "stale (coordinator gone; ctq train --resume)"
        cells = {"run": str(r["run_id"]), "name": r["name"], "status": status, "schedule": r["schedule"],
                 "started": r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), "wall s": f"{r['wall_seconds']:.1f}",
                 "models": str(r["models"]), "hops": str(r["hops"]), "best model": r["best_model"] or "-",
                 "best": "-" if r["best_score"] is None else f"{r['best_score']:.4f}" if console.width < 80
                 else f"{r['metric']} {r['best_score']:.4f}"}
        table.add_row(*(cells[c] for c in cols))
    console.print(table)


@main.command()
@click.argument("run_id", type=RUN_ID)
@dsn_option
@json_option
@handle_errors
def models(run_id: int, dsn: str | None, as_json: bool) -> None:
    """The leaderboard of one run."""
    rows = run_async(api.models(resolve_dsn(dsn), run_id))
    if as_json:
        _echo_json(rows)
    else:
        _print_leaderboard(rows, title=f"run {run_id}")


# ------------------------------------------------------------------ report, compare, housekeeping
@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--out", required=True, type=click.Path(), metavar="FILE",
              help="The HTML file to write (replaced if it exists, once the new one is complete; a link is "
                   "written through, a file keeps its permissions); - for stdout.")
@click.option("--curves", type=click.IntRange(min=0), default=None, metavar="N",
              help="Draw the learning curves of the N best models in full (default 12); with more models, "
                   "one figure summarises them all.")
@dsn_option
@handle_errors
def report(run_id: int, out: str, curves: int | None, dsn: str | None) -> None:
    """Write one self-contained HTML report of a run: leaderboard, learning curves, the timeline of
    hops per segment, configuration and provenance (nothing to fetch when viewing it)."""
    with _while(f"reading run {run_id} and drawing its figures"):
        size = run_async(api.report(resolve_dsn(dsn), run_id, out, curves))
    if out != "-":  # (the report itself went to stdout)
        click.echo(f"wrote {out} ({size / 1024:.0f} KiB)")


@main.command()
@click.argument("run_a", type=RUN_ID)
@click.argument("run_b", type=RUN_ID)
@dsn_option
@json_option
@handle_errors
def compare(run_a: int, run_b: int, dsn: str | None, as_json: bool) -> None:
    """Two runs side by side: best model and metric, hops, wall time, utilization, and where their
    configurations differ."""
    result = run_async(api.compare(resolve_dsn(dsn), run_a, run_b))
    if as_json:
        _echo_json(result)
        return
    a, b = result["runs"]

    def cell(value):
        if value is None:
            return "-"
        if hasattr(value, "strftime"):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    table = Table(box=box.SIMPLE_HEAD)
    for col in ("", f"run {run_a}", f"run {run_b}"):
        table.add_column(col, overflow="fold")
    for key in a:
        table.add_row(key.replace("_", " "), cell(a[key]), cell(b[key]))
    console = _stdout()
    console.print(table)
    if not result["config_differences"]:
        click.echo("same configuration")
        return
    diff = Table(title="configuration differences", box=box.SIMPLE_HEAD)
    for col in ("key", f"run {run_a}", f"run {run_b}"):
        diff.add_column(col, overflow="fold")
    for d in result["config_differences"]:
        diff.add_row(d["key"], *("-" if v is None else json.dumps(v) for v in (d["a"], d["b"])))
    console.print(diff)


def _confirm(what: str, yes: bool) -> None:
    """Deleting needs --yes, or a "y" typed on a terminal (like apt-get: no terminal, no --yes: no)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: pass --yes to confirm (no terminal to ask on); nothing deleted")
    if not click.confirm(f"{what}?", default=False, err=True):
        raise UsageError("not confirmed; nothing deleted")


@main.command("rm")
@click.argument("run_ids", type=RUN_ID, nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@dsn_option
@handle_errors
def rm(run_ids: tuple[int, ...], yes: bool, dsn: str | None) -> None:
    """Delete runs with their models, hops and epochs (all or none). Refuses a run a live ctq
    process is driving, and ids that do not exist. Runs are the audit trail: only members of
    ctq_admin and the installer may delete them. Their packs stay: `ctq packs gc` drops unused ones."""
    target = resolve_dsn(dsn)
    rows = run_async(api.runs_to_remove(target, list(run_ids)))
    _confirm("delete " + "; ".join(f"run {r['run_id']} ({r['name']}, {r['status']}, {r['models']} models, "
                                   f"{r['hops']} hops)" for r in rows), yes)
    removed = run_async(api.remove_runs(target, list(run_ids)))
    click.echo(f"deleted {len(removed)} run(s): {', '.join(str(r['run_id']) for r in removed)}")


def _size(n) -> str:
    if n is None:
        return "(table gone)"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@main.group(invoke_without_command=True)
@dsn_option
@json_option
@click.pass_context
@handle_errors
def packs(ctx, dsn: str | None, as_json: bool) -> None:
    """List packs (the packed copies of source tables) with their size and the runs using them;
    `ctq packs gc` drops the ones no run uses."""
    if ctx.invoked_subcommand is not None:
        return
    listing = run_async(api.packs(resolve_dsn(dsn)))
    if as_json:
        _echo_json(listing)
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("pack", "source", "rows", "segments", "size", "runs", "last used", "packed by"):
        table.add_column(col, justify="right" if col in ("rows", "segments", "size", "runs") else "left")
    for p in listing["packs"]:
        table.add_row(p["pack_id"], p["source_table"], str(p["rows"]), str(p["segments"]), _size(p["bytes"]),
                      str(p["runs"]), p["last_used"].strftime("%Y-%m-%d %H:%M") if p["last_used"] else "-",
                      p["packed_by"])
    for p in listing["orphans"]:
        table.add_row(p["pack_id"], "(orphaned: its packing died)", "-", "-", _size(p["bytes"]), "0", "-", "-")
    _stdout().print(table)


@packs.command("gc")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@dsn_option
@json_option
@handle_errors
def packs_gc(yes: bool, dsn: str | None, as_json: bool) -> None:
    """Drop the packs no run uses (and pack tables a dead packing left). Takes a superuser."""
    from ctq.housekeeping import unused

    target = resolve_dsn(dsn)
    candidates = unused(run_async(api.packs(target, for_gc=True)))
    if candidates:
        _confirm(f"drop {len(candidates)} unused pack(s), "
                 f"{_size(sum(p['bytes'] or 0 for p in candidates))}: "
                 + ", ".join(p["pack_id"] for p in candidates), yes)
    dropped = run_async(api.gc_packs(target, candidates)) if candidates else []
    if as_json:
        _echo_json({"dropped": [p["pack_id"] for p in dropped], "bytes": sum(p["bytes"] or 0 for p in dropped)})
    else:
        click.echo(f"dropped {len(dropped)} pack(s), {_size(sum(p['bytes'] or 0 for p in dropped))} freed"
                   + (": " + ", ".join(p["pack_id"] for p in dropped) if dropped else ""))
# ------------------------------------------------------------------- predict, evaluate, export
model_option = click.option("--model", "model_id", type=MODEL_ID, default=None, metavar="MODEL_ID",
                            help="A model of the run, by its id in `ctq models RUN_ID` (default: the run's best).")


@main.command()
@click.argument("run_id", type=RUN_ID)
@model_option
@click.option("--table", required=True, help="The table to score (schema.table): it has the run's feature columns.")
@click.option("--id-column", required=True, help="The column that identifies each row (no NULLs, unique).")
@click.option("--out", required=True, help="The table to create: (id, prediction[, probabilities]).")
@click.option("--proba", is_flag=True, help="Also write each row's class probabilities (float8[], in class order).")
@click.option("--replace", is_flag=True, help="Replace --out if it exists (only once every row is scored; its "
                                               "grants and comment carry over, its indexes do not).")
@dsn_option
@json_option
@handle_errors
def predict(run_id: int, model_id: int | None, table: str, id_column: str, out: str, proba: bool, replace: bool,
            dsn: str | None, as_json: bool) -> None:
    """Score a table inside the database with a trained model, segment-parallel; write the predictions to --out."""
    with _while(f"scoring {table}: checking its rows, then every segment loads Keras and the model (a few "
                "seconds) and scores its share"):
        result = run_async(api.predict(resolve_dsn(dsn), run_id, table=table, out=out, id_column=id_column,
                                       model_id=model_id, proba=proba, replace=replace))
    for note in result["notes"]:
        _note(note)
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"{result['out']}: {result['rows']} predictions of model {result['model_id']} ({result['model']}) "
                   f"of run {run_id}, {result['segments']} segments, {result['seconds']:.1f}s")


@main.command()
@click.argument("run_id", type=RUN_ID)
@model_option
@click.option("--table", required=True, help="A held-out table with the run's feature and label columns.")
@dsn_option
@json_option
@handle_errors
def evaluate(run_id: int, model_id: int | None, table: str, dsn: str | None, as_json: bool) -> None:
    """Loss and metric of a trained model on a held-out table, computed inside the database."""
    with _while(f"evaluating on {table}: checking its rows, then every segment loads Keras and the model "
                "(a few seconds) and scores its share"):
        result = run_async(api.evaluate(resolve_dsn(dsn), run_id, table=table, model_id=model_id))
    for note in result["notes"]:
        _note(note)
    if as_json:
        _echo_json(result)
        return
    measured = ("accuracy", "mae", "auc", "f1", "precision", "recall")  # the run's metric too (--json has it)
    metrics = ", ".join(f"{m} {result[m]:.4f}" for m in measured if result.get(m) is not None)
    click.echo(f"model {result['model_id']} ({result['model']}) of run {run_id} on {result['table']} "
               f"({result['rows']} rows): loss {result['loss']:.4f}, {metrics}")


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--out", required=True, metavar="TABLE", help="Table to create with the rows, e.g. public.val_rows.")
@click.option("--replace", is_flag=True, help="Replace --out if it exists.")
@dsn_option
@json_option
@handle_errors
def validation(run_id: int, out: str, replace: bool, dsn: str | None, as_json: bool) -> None:
    """The rows a run held out for validation, every column, as a new table: score a baseline on
    the very rows ctq validated on (refused when the source has changed since it was packed)."""
    result = run_async(api.validation(resolve_dsn(dsn), run_id, out, replace=replace))
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"created {result['out']}: the {result['rows']} validation rows of run {run_id}")


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.argument("path", type=click.Path(dir_okay=False))
@model_option
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@dsn_option
@json_option
@handle_errors
def export(run_id: int, path: str, model_id: int | None, force: bool, dsn: str | None, as_json: bool) -> None:
    """Save a trained model as a standalone .keras file (normalisation included) for keras.saving.load_model."""
    result = run_async(api.export(resolve_dsn(dsn), run_id, path, model_id=model_id, force=force))
    for note in result["notes"]:
        _note(note)
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"{result['path']}: model {result['model_id']} ({result['model']}) of run {run_id}")


# ----------------------------------------------------------------------------------- simulate
def _number_list(text: str | None, kind=float) -> list | None:
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"expected a comma-separated list of numbers, got {text!r}") from None


SYNTHETIC_UNIT = "fast sub-epochs"  # the synthetic model's time unit: one fast model's hop


@main.command()
@click.option("--models", default=48, show_default=True, type=click.IntRange(1, MAX_MODELS),
              help="Number of models M (synthetic grid).")
@click.option("--segments", default="2,4,6,8", show_default=True, help="Segment counts S, comma-separated.")
@click.option("--p-fast", default=0.8, show_default=True, type=click.FloatRange(0, 1),
              help="Probability that a model is fast (each model is drawn independently with --seed); "
                   "the others are slow.")


@click.option("--slow-ratio", default=8.0, show_default=True, type=click.FloatRange(0, 1e6, min_open=True),
              help="L: a slow model's sub-epoch takes L times a fast one's.")


@click.option("--segment-speed", default=None,
              help="Relative speed of each segment (hardware heterogeneity), comma-separated; 0.5 is half "
                   "as fast; needs a single --segments value.")


@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Epochs (synthetic grid; --replay uses the run's).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seeds the model draw and the schedules' choices.")
@click.option("--replay", "replay_run", type=RUN_ID, default=None,
              help="Use the measured hop times (seconds) of a run (finished, interrupted or resumed; not one "
                   "whose search stopped models early or asked for them during the run: asha, hyperband, tpe) "
                   "instead of a synthetic grid.")


@dsn_option
@json_option
@click.pass_context
@handle_errors
def simulate(ctx, models, segments, p_fast, slow_ratio, segment_speed, epochs, seed, replay_run, dsn, as_json):
    """Makespans of MOP (asynchronous; its cost-aware and random rules) vs BSP (rounds) without
    training anything.

    A synthetic grid's times are in fast sub-epochs (one fast model's hop on a speed-1 segment);
    a replay's are in seconds. The lower bound is what no schedule can beat: the total work spread
    over every segment, the busiest model's work, or the busiest (slowest) segment's work. The
    cost-aware rule is simulated knowing each model's hop from the start (a run's warm-up times
    every model before its first hop).

    A replay at the run's own segment count replays each model's mean hop on each segment, plus
    the coordinator's median gap between hops, and prints the measured span of the run's hop
    schedule beside it; at other counts a model's mean hop is scaled by measured/new segments. It
    leaves out the warm-up, check and packing before the first hop.
    """
    from ctq import simulate as sim

    if replay_run is not None:
        ignored = [f"--{name.replace('_', '-')}" for name in ("models", "p_fast", "slow_ratio", "segment_speed",
                                                              "epochs")
                   if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if ignored:
            raise UsageError(f"--replay uses the run's measured hops and epochs; it cannot be combined with "
                             f"{', '.join(ignored)}")
    seg_list = _number_list(segments, int)
    if not seg_list or min(seg_list) < 1 or max(seg_list) > MAX_SEGMENTS:  # (100000 ran for minutes: a hang)
        raise UsageError(f"--segments needs integers from 1 to {MAX_SEGMENTS}, as a run's segments")
    speeds = _number_list(segment_speed)
    if speeds is not None and len(seg_list) != 1:
        raise UsageError("--segment-speed needs exactly one --segments value")
    if speeds is not None and (len(speeds) != seg_list[0] or not all(0 < v < float("inf") for v in speeds)):
        raise UsageError(f"--segment-speed needs {seg_list[0]} positive numbers, one per segment, got {segment_speed!r}")
    try:
        if replay_run is not None:
            measured = run_async(api.measured_run(resolve_dsn(dsn), replay_run))
            results = sim.replay(measured.hops, seg_list, epochs=measured.epochs, seed=seed,
                                 gap_seconds=measured.gap_seconds, measured_segments=measured.segments)
        else:
            results = {}
            for s in seg_list:
                durations = sim.heterogeneous_durations(models, s, p_fast, slow_ratio, seed,
                                                        segment_speed=speeds if speeds else None)
                results[s] = sim.compare(durations, s, epochs=epochs, seed=seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    unit = "s" if replay_run is not None else SYNTHETIC_UNIT
    closed_form = replay_run is None and speeds is None  # the closed form knows no segment speeds
    if as_json:
        _echo_json([
            {"segments": s, "time_unit": unit, "mop_makespan": c.mop.makespan, "bsp_makespan": c.bsp.makespan,
             "mop_random_makespan": c.mop_random.makespan, "cost_gain": c.cost_gain, "speedup": c.speedup, "lower_bound": c.mop.lower_bound, "mop_utilization": c.mop.utilization,
             "bsp_utilization": c.bsp.utilization,
             "theory_speedup": sim.theory_speedup(p_fast, slow_ratio, s) if closed_form else None,
             "measured_span": measured.span_seconds if replay_run is not None and s == measured.segments else None,
             "gap_seconds": measured.gap_seconds if replay_run is not None else None}
            for s, c in results.items()
        ])
        return
    for s, c in results.items():
        click.echo(c.format(unit))
        if closed_form:
            click.echo(f"closed-form speedup (Cerebro-DS): {sim.theory_speedup(p_fast, slow_ratio, s):.2f}x")
        if replay_run is not None and s == measured.segments and measured.span_seconds:
            click.echo(f"run {replay_run}'s measured hop schedule ({measured.segments} segments): {measured.span_seconds:.4g} s; "
                       f"replayed MOP ({c.mop.scheduling}) / measured: {c.mop.makespan / measured.span_seconds:.3f}")
        click.echo("")


@main.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of grid.yaml (for editors: see docs/grid-yaml.md, "Editor support").

    It is the JSON Schema of the pydantic models that validate grid.yaml, so it lists exactly the
    keys and value limits `ctq train` accepts; `ctq train` still checks more (cross-key rules,
    keras_json files).
    """
    import json

    from ctq.schema import grid_schema

    click.echo(json.dumps(grid_schema(), indent=2))


if __name__ == "__main__":
    main()

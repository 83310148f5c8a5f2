"""The ``ctq`` command: a thin click layer over :mod:`ctq.api` and friends.

Exit codes: 0 success, 1 a training/run failure, 2 usage or configuration error, 130 interrupted.
With ``--json`` a command prints exactly one JSON document on stdout and no live display.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys

import click
from rich.console import Console
from rich.table import Table

from ctq import __version__, api
from ctq.embedded import EmbeddedCluster, default_home, resolve_dsn
from ctq.errors import CtqError, Interrupted, UsageError

err_console = Console(stderr=True)
dsn_option = click.option("--dsn", envvar="CTQ_DSN", default=None,
                          help="PostgreSQL DSN (default: $CTQ_DSN, else the embedded database, started on demand).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


def _stdout() -> Console:
    """Tables on stdout; when it is a pipe or a file, wide enough that nothing gets cut."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _echo_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def run_async(coro):
    """Run a coroutine; SIGINT and SIGTERM cancel it, so both end in a clean 'interrupted'.

    Both handlers are installed explicitly: a process started in the background by a
    non-interactive shell (CI, make, cron wrappers) inherits SIGINT as *ignored*, and Python's
    default Ctrl-C handling would then never fire.
    """

    async def main():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            raise Interrupted("interrupted") from None
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def handle_errors(fn):
    """Turn ctq errors into a one-line message on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CtqError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            sys.exit(exc.exit_code)

    return wrapper


@click.group()
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
    """Where the embedded database lives and whether it runs. Exit 1 when it is not running."""
    status = EmbeddedCluster(default_home()).status()
    if as_json:
        _echo_json(status)
    else:
        for key, value in status.items():
            click.echo(f"{key:>15}: {value}")
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
    """Create or upgrade schema ctq and its in-database functions (idempotent)."""
    sha = run_async(api.install(resolve_dsn(dsn), list(python_path) or None))
    click.echo(f"ctq {__version__} installed (server code {sha[:12]})")


# ------------------------------------------------------------------------------------- doctor
@main.command()
@dsn_option
@json_option
@handle_errors
def doctor(dsn: str | None, as_json: bool) -> None:
    """Check the database, PL/Python and Keras inside the server; explain how to fix problems."""
    from ctq.doctor import run_checks

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
            err_console.print(f"[red]{c.name}:[/] {c.fix}")
    sys.exit(1 if failed else 0)


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
@dsn_option
@handle_errors
def load(csv_file: str, table: str, replace: bool, delimiter: str | None, null: str | None,
         encoding: str | None, dsn: str | None) -> None:
    """Load a CSV file with a header row into a new table; says what it created, refuses what it would misread."""
    from rich.markup import escape

    from ctq.errors import CtqError
    from ctq.loader import parse_delimiter, parse_table, read_csv, write_table

    try:  # the file is read and checked whole before any database work
        delimiter = parse_delimiter(delimiter)
        parse_table(table)
        parsed = read_csv(csv_file, delimiter=delimiter, null=null, encoding=encoding)

        async def go():
            async with api.connect(resolve_dsn(dsn)) as conn:
                return await write_table(conn, parsed, table, replace=replace, source=csv_file)

        result = run_async(go())
    except CtqError as exc:  # messages quote column names and values: keep rich from reading "[x]" as markup
        exc.args = (escape(str(exc)),)
        raise
    click.echo(result.summary())
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


# -------------------------------------------------------------------------------------- train
@main.command()
@click.argument("grid", type=click.Path(dir_okay=False), required=False)
@dsn_option
@json_option
@click.option("--name", default=None, help="Run name (default: the config's name).")
@click.option("--schedule", type=click.Choice(["mop", "bsp"]), default="mop", show_default=True,
              help="mop: asynchronous model hopping; bsp: MADlib-style rounds, for comparison.")
@click.option("--resume", "resume", default=None, is_flag=False, flag_value="last", metavar="[RUN_ID]",
              help="Continue an unfinished run: --resume RUN_ID, or GRID --resume for the newest "
                   "unfinished run of that configuration.")
@handle_errors
def train(grid: str | None, dsn: str | None, as_json: bool, name: str | None, schedule: str,
          resume: str | None) -> None:
    """Train every model of GRID (a grid.yaml) with MOP and print the leaderboard."""
    from ctq.config import load_config

    if grid is None and resume in (None, "last"):
        raise UsageError("give a GRID file, or --resume RUN_ID")
    config = load_config(grid) if grid else None  # configuration errors before any database work
    run_id = None
    if resume not in (None, "last"):
        if not resume.isdigit():
            raise UsageError(f"--resume takes a run id, got {resume!r}")
        run_id = int(resume)
    factory = None
    if not as_json and sys.stdout.isatty():
        from ctq.progress import LiveProgress

        factory = LiveProgress
    if resume is None:
        work = api.train(config, resolve_dsn(dsn), name=name, schedule=schedule, progress_factory=factory,
                         notify=lambda message: err_console.print(f"note: {message}", highlight=False, markup=False))
    else:
        work = api.resume(resolve_dsn(dsn), run_id, config, progress_factory=factory)
    result = run_async(work)
    if as_json:
        _echo_json(result.to_json())
    else:
        _print_leaderboard(result.leaderboard, title=f"run {result.run_id} ({result.name}): {result.status}")
        click.echo(f"{result.hops} hops in {result.wall_seconds:.1f}s, segment utilization "
                   f"{result.utilization:.1%}; best {result.metric} = {result.best_metric} ({result.best_model})")
    if result.failed_models:
        for model_id, reason in result.failed_models.items():
            err_console.print(f"[red]model {model_id} failed:[/] {reason}", highlight=False)
        sys.exit(1)


def _print_leaderboard(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for col in ("rank", "model", "status", "epochs", "train loss", "val loss", "val metric", "score"):
        table.add_column(col, justify="left" if col in ("model", "status") else "right", no_wrap=True)

    def f(v):
        return "-" if v is None else f"{v:.4f}"

    for r in rows:
        table.add_row(str(r["rank"]), r["name"], r["status"], str(r["epochs_done"]), f(r["train_loss"]),
                      f(r["val_loss"]), f(r["val_metric"]), f(r["score"]))
    _stdout().print(table)


# ------------------------------------------------------------------------------- runs, models
@main.command()
@dsn_option
@json_option
@click.option("--limit", default=50, show_default=True)
@handle_errors
def runs(dsn: str | None, as_json: bool, limit: int) -> None:
    """List runs, newest first."""
    rows = run_async(api.runs(resolve_dsn(dsn), limit))
    if as_json:
        _echo_json(rows)
        return
    table = Table()
    for col in ("run", "name", "status", "schedule", "started", "wall s", "models", "hops", "best model", "best"):
        table.add_column(col)
    for r in rows:
        status = r["status"]
        if status == "running" and not r["alive"]:
            status = "stale (coordinator gone; ctq train --resume)"
        table.add_row(str(r["run_id"]), r["name"], status, r["schedule"],
                      r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), f"{r['wall_seconds']:.1f}",
                      str(r["models"]), str(r["hops"]), r["best_model"] or "-",
                      "-" if r["best_score"] is None else f"{r['best_score']:.4f}")
    _stdout().print(table)


@main.command()
@click.argument("run_id", type=int)
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


# ----------------------------------------------------------------------------------- simulate
def _number_list(text: str | None, kind=float) -> list | None:
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"expected a comma-separated list of numbers, got {text!r}") from None


@main.command()
@click.option("--models", default=48, show_default=True, help="Number of models M.")
@click.option("--segments", default="2,4,6,8", show_default=True, help="Segment counts S, comma-separated.")
@click.option("--p-fast", default=0.8, show_default=True, help="Fraction of fast models.")
@click.option("--slow-ratio", default=8.0, show_default=True, help="Slow/fast sub-epoch time ratio L.")
@click.option("--segment-speed", default=None,
              help="Relative speed of each segment (hardware heterogeneity), comma-separated; "
                   "needs a single --segments value.")
@click.option("--epochs", default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--replay", "replay_run", type=int, default=None,
              help="Use the measured hop times of a finished run instead of --models/--p-fast/--slow-ratio.")
@dsn_option
@json_option
@handle_errors
def simulate(models, segments, p_fast, slow_ratio, segment_speed, epochs, seed, replay_run, dsn, as_json):
    """Makespans of MOP (asynchronous) vs BSP (rounds) without training anything."""
    from ctq import simulate as sim

    seg_list = _number_list(segments, int)
    if not seg_list or min(seg_list) < 1:
        raise UsageError("--segments needs positive integers")
    speeds = _number_list(segment_speed)
    if speeds is not None and len(seg_list) != 1:
        raise UsageError("--segment-speed needs exactly one --segments value")
    try:
        if replay_run is not None:
            hops, run_epochs = run_async(api.hop_durations(resolve_dsn(dsn), replay_run))
            results = sim.replay(hops, seg_list, epochs=run_epochs, seed=seed)
        else:
            results = {}
            for s in seg_list:
                durations = sim.heterogeneous_durations(models, s, p_fast, slow_ratio, seed,
                                                        segment_speed=speeds if speeds else None)
                results[s] = sim.compare(durations, s, epochs=epochs, seed=seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        _echo_json([
            {"segments": s, "mop_makespan": c.mop.makespan, "bsp_makespan": c.bsp.makespan,
             "speedup": c.speedup, "lower_bound": c.mop.lower_bound, "mop_utilization": c.mop.utilization,
             "bsp_utilization": c.bsp.utilization,
             "theory_speedup": None if replay_run is not None else sim.theory_speedup(p_fast, slow_ratio, s)}
            for s, c in results.items()
        ])
        return
    for s, c in results.items():
        click.echo(c.format())
        if replay_run is None and speeds is None:
            click.echo(f"closed-form speedup (Cerebro-DS): {sim.theory_speedup(p_fast, slow_ratio, s):.2f}x")
        click.echo("")


if __name__ == "__main__":
    main()

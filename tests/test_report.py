"""`ctq report`, `ctq compare`, `ctq runs` filters and the analysts' SQL views, on two real trained
runs (the real CLI in a subprocess, the catalog read back directly to check every number)."""

from __future__ import annotations

import json
import os
import re
import stat
from html.parser import HTMLParser

import asyncpg
import pytest

from conftest import write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRID = """
    name: {name}
    data:
      table: {table}
      features: [f1, f2, f3, f4, f5, f6, f7, f8]
      label: label
      task: classification
      validation_fraction: 0.2
    segments: 2
    models:
      - name: narrow
        layers:
          - {{dense: 8, activation: relu}}
      - name: wide
        layers:
          - {{dense: 32, activation: relu}}
    search:
      method: grid
      seed: 11
      space:
        optimizer: [adam]
        learning_rate: [{lr}]
        batch_size: [64]
    epochs: 2
    metric: val_accuracy
"""


@pytest.fixture(scope="module")
async def runs(small_table, tmp_path_factory, dsn):
    """Two finished runs of the same data: rep-a (MOP, lr 0.01, models narrow and wide) and rep-b
    (BSP, lr 0.03, narrow only)."""
    from ctq import api

    d = tmp_path_factory.mktemp("report")
    ids = {}
    for name, lr, schedule in (("rep-a", 0.01, "mop"), ("rep-b", 0.03, "bsp")):
        body = GRID.format(name=name, table=small_table, lr=lr)
        if name == "rep-b":
            body = body.replace("      - name: wide\n        layers:\n          - {dense: 32, activation: relu}\n", "")
            # defaults left out (rep-a spells them): no difference to ctq compare (a user trial)
            body = body.replace("      validation_fraction: 0.2\n", "").replace("      method: grid\n", "")
            assert "wide" not in body and "validation_fraction" not in body and "method" not in body
        grid = write_grid(d, body, f"{name}.yaml")
        result = await api.train(str(grid), dsn, schedule=schedule)
        assert result.status == "succeeded"
        ids[name] = result.run_id
    return {"a": ids["rep-a"], "b": ids["rep-b"], "dir": d}


class Doc(HTMLParser):
    """The report's structure: tables by id (rows of (data-key, text) cells), figures by id/class
    with the ids of the SVG groups inside and the paths each group holds, and every URL attribute."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.figures, self.urls, self.tags = {}, [], [], set()
        self._table = self._row = self._cell = self._figure = None
        self._groups: list = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [a.get("data-key"), ""]
            self._row.append(self._cell)
        elif tag == "figure":
            self._figure = {"id": a.get("id"), "class": a.get("class"), "model": a.get("data-model-id"),
                            "groups": {}}
            self.figures.append(self._figure)
        elif tag == "g" and self._figure is not None:
            self._groups.append(a.get("id"))
            if a.get("id"):
                self._figure["groups"][a["id"]] = []
        elif tag == "path" and self._figure is not None:
            for gid in self._groups:
                if gid:
                    self._figure["groups"][gid].append(a.get("d", ""))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag == "g":
            self._groups.pop()

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "figure":
            self._figure = None
        elif tag == "g" and self._groups:
            self._groups.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def close(text: str, value) -> bool:
    if value is None:
        return text == "-"
    return float(text) == pytest.approx(value, rel=1e-5)


async def test_report_renders_leaderboard_curves_and_timeline_from_the_catalog(runs, run_cli, conn):
    run_id = runs["a"]
    out = runs["dir"] / "a.html"
    proc = run_cli("report", str(run_id), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    doc = Doc(text)
    # self-contained: nothing to fetch (only in-document references)
    assert "script" not in doc.tags and "link" not in doc.tags and "img" not in doc.tags
    assert all(url.startswith("#") for url in doc.urls), doc.urls
    assert "decisions" not in doc.tables  # a grid decides nothing (ASHA's: tests/test_search.py)

    models = {r["model_id"]: dict(r) for r in await conn.fetch("SELECT * FROM ctq.models WHERE run_id = $1", run_id)}
    board = doc.tables["leaderboard"]
    header, rows = board[0], board[1:]
    assert [c[1] for c in header][:3] == ["rank", "model", "name"]
    assert len(rows) == len(models) == 2
    ranked = [r["model_id"] for r in await conn.fetch(
        "SELECT model_id FROM ctq.leaderboard WHERE run_id = $1 ORDER BY rank", run_id)]
    assert [int(dict(r)["model_id"]) for r in rows] == ranked
    for row in rows:
        cells = dict(row)
        m = models[int(cells["model_id"])]
        assert cells["name"] == m["name"] and cells["status"] == m["status"] == "succeeded"
        assert int(cells["epochs_done"]) == m["epochs_done"] == 2
        for key in ("train_loss", "train_metric", "val_loss"):
            assert close(cells[key], m[key]), key
        assert close(cells["score"], m["val_metric"])  # the run's metric is val_accuracy: shown once
        assert "val_metric" not in cells and "momentum=None" not in cells["hyperparameters"]

    # one learning-curve figure per model, each line with one point per recorded epoch
    curves = [f for f in doc.figures if f["class"] == "curve"]
    assert sorted(int(f["model"]) for f in curves) == sorted(models)
    for f in curves:
        m = int(f["model"])
        epochs = await conn.fetchval("SELECT count(*) FROM ctq.epochs WHERE run_id = $1 AND model_id = $2", run_id, m)
        for line in ("train-loss", "val-loss", "train-metric", "val-metric"):
            (path,) = [d for d in f["groups"][f"{line}-{m}"] if d.startswith("M")][:1]
            assert len(re.findall(r"[ML]", path)) == epochs == 2, line

    assert not [f for f in doc.figures if f["id"] == "curves-summary"]  # every model in full: no summary

    # --curves 1: the best model in full, all of them in one summary figure (a report of 1,200
    # models took 120 s and 22 MB with a figure each; with this, 2.6 s and 2 MB)
    proc = run_cli("report", str(run_id), "--out", str(out), "--curves", "1")
    assert proc.returncode == 0, proc.stderr
    short = Doc(out.read_text())
    assert [int(f["model"]) for f in short.figures if f["class"] == "curve"] == ranked[:1]
    (summary,) = [f for f in short.figures if f["id"] == "curves-summary"]
    for what in ("loss", "metric"):
        assert {f"range-{what}", f"quartiles-{what}", f"median-{what}", f"val-{what}-{ranked[0]}"} <= set(
            summary["groups"]), summary["groups"].keys()
    assert len(short.tables["leaderboard"]) == 1 + 2  # the leaderboard still lists every model

    # the timeline: one lane per segment, one bar per hop that segment ran
    (timeline,) = [f for f in doc.figures if f["id"] == "timeline"]
    per_segment = dict(await conn.fetch("SELECT segment, count(*) FROM ctq.hops WHERE run_id = $1 GROUP BY segment",
                                        run_id))
    assert {g for g in timeline["groups"] if g.startswith("lane-")} == {"lane-0", "lane-1"}
    for seg, n in per_segment.items():
        assert len(timeline["groups"][f"lane-{seg}"]) == n == 2 * 2  # 2 models x 2 epochs per segment

    # provenance and configuration
    run = await conn.fetchrow("SELECT * FROM ctq.runs WHERE run_id = $1", run_id)
    facts = {row[0][1]: row[1][1] for row in doc.tables["provenance"]}
    assert facts["run by"] == run["run_by"] and facts["source table"] == run["source_table"] == "public.small"
    assert facts["pack"] == run["pack_id"] and facts["client host"] == run["client_host"]
    assert f"ctq {json.loads(run['versions'])['ctq']}" in facts["versions"]
    assert "rep-a" in text and "learning_rate" in text


async def test_report_overwrites_only_when_complete_and_refuses_bad_input(runs, run_cli):
    out = runs["dir"] / "again.html"
    out.write_text("old")
    proc = run_cli("report", "999999", "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.strip() == "error: no run with id 999999", proc.stderr
    assert out.read_text() == "old"  # nothing written on an error
    from ctq import files
    from ctq.errors import UsageError

    with pytest.raises(UsageError, match="no such directory"):  # exit 2, before any database work
        files.target(str(runs["dir"] / "no" / "such" / "r.html"), "--out")
    with pytest.raises(UsageError, match="is a directory"):
        files.target(str(runs["dir"]), "--out")
    # not a regular file (as root, --out /dev/full replaced the device node with the report)
    fifo = runs["dir"] / "fifo"
    os.mkfifo(fifo)
    proc = run_cli("report", str(runs["b"]), "--out", str(fifo))
    assert proc.returncode == 2 and "is not a regular file" in proc.stderr and stat.S_ISFIFO(fifo.stat().st_mode)
    # an existing file keeps its mode, a link is written through (it replaced both with a new 0644 file)
    out.chmod(0o600)
    link = runs["dir"] / "link.html"
    link.symlink_to(out)
    proc = run_cli("report", str(runs["b"]), "--out", str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and out.read_text().startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in runs["dir"].iterdir() if p.name.startswith(".ctq-")] == []
    proc = run_cli("report", str(runs["b"]), "--out", "-")  # stdout (it wrote a file named '-')
    assert proc.returncode == 0 and proc.stdout.startswith("<!DOCTYPE html>") and not os.path.exists("-")


async def test_report_shows_a_model_status_it_does_not_know(runs, dsn):
    """A newer version's status (adaptive search stopping a model at a rung, say) shows as it is."""
    from ctq import report

    c = await asyncpg.connect(dsn)
    try:
        data = await report.load(c, runs["a"])
    finally:
        await c.close()
    data.leaderboard[0]["status"] = "stopped"
    doc = Doc(report.render_html(data))
    assert dict(doc.tables["leaderboard"][1])["status"] == "stopped"


async def test_compare_matches_the_catalog(runs, run_cli, conn):
    a, b = runs["a"], runs["b"]
    proc = run_cli("compare", str(a), str(b), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for side, run_id in zip(result["runs"], (a, b)):
        run = await conn.fetchrow("SELECT * FROM ctq.runs WHERE run_id = $1", run_id)
        best = await conn.fetchrow("SELECT model_id, name, score FROM ctq.leaderboard WHERE run_id = $1 AND rank = 1",
                                   run_id)
        hops = await conn.fetch("SELECT segment, started_at, finished_at FROM ctq.hops WHERE run_id = $1", run_id)
        assert side["run_id"] == run_id and side["schedule"] == run["schedule"] and side["name"] == run["name"]
        assert (side["best_model_id"], side["best_model"]) == (best["model_id"], best["name"])
        assert side["best_score"] == pytest.approx(best["score"])
        models = await conn.fetchval("SELECT count(*) FROM ctq.models WHERE run_id = $1", run_id)
        assert side["hops"] == len(hops) == models * 2 * 2 and side["models"] == models
        wall = (run["finished_at"] - run["started_at"]).total_seconds()
        assert side["wall_seconds"] == pytest.approx(wall, abs=1e-3)
        span = (max(h["finished_at"] for h in hops) - min(h["started_at"] for h in hops)).total_seconds()
        busy = sum((h["finished_at"] - h["started_at"]).total_seconds() for h in hops)
        assert side["schedule_seconds"] == pytest.approx(span, abs=1e-3)
        assert side["segment_utilization"] == pytest.approx(busy / (2 * span), rel=1e-6)
    differences = {d["key"]: (d["a"], d["b"]) for d in result["config_differences"]}
    assert differences == {"name": ("rep-a", "rep-b"), "schedule": ("mop", "bsp"),
                           "search.space.learning_rate[0]": (0.01, 0.03), "models[1].name": ("wide", None),
                           "models[1].layers[0].dense": (32, None), "models[1].layers[0].activation": ("relu", None),
                           "models[1].layers[0].l2": (0.0, None)}
    proc = run_cli("compare", str(a), str(b))
    assert proc.returncode == 0 and "configuration differences" in proc.stdout and "0.03" in proc.stdout
    proc = run_cli("compare", str(a), "999999", "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "no run with id 999999"


async def test_runs_filters_by_status_and_name(runs, run_cli, conn, dsn):
    from ctq import api

    async def listed(**filters):
        return [r["run_id"] for r in await api.runs(dsn, **filters)]

    a, b = runs["a"], runs["b"]
    assert await listed(name="rep-a") == [a]
    assert await listed(name="rep-?") == [b, a]
    assert await listed(name="rep*", limit=1) == [b]
    assert await listed(name="rep%") == []  # % and _ are literal characters, not LIKE's wildcards
    assert await listed(name="rep_a") == []
    assert {a, b} <= set(await listed(status="succeeded"))
    # as if b's coordinator had died: 'running' without its lock is stale
    finished = await conn.fetchval("SELECT finished_at FROM ctq.runs WHERE run_id = $1", b)
    await conn.execute("UPDATE ctq.runs SET status = 'running', finished_at = NULL WHERE run_id = $1", b)
    try:
        proc = run_cli("runs", "--json", "--status", "stale", "--name", "rep-*")
        assert proc.returncode == 0 and [r["run_id"] for r in json.loads(proc.stdout)] == [b], proc.stderr
        assert await listed(status="running", name="rep-*") == []
    finally:
        await conn.execute("UPDATE ctq.runs SET status = 'succeeded', finished_at = $2 WHERE run_id = $1", b, finished)
    proc = run_cli("runs", "--status", "done")
    assert proc.returncode == 2 and "'done' is not one of" in proc.stderr
    proc = run_cli("runs", "--status", "stale", "--name", "rep-*")  # none now: a line, not bare headers
    assert proc.returncode == 0 and proc.stdout == "no runs with status stale and name 'rep-*'\n", proc.stdout


async def test_a_name_the_terminals_charset_cannot_show_is_escaped_not_a_traceback(runs, run_cli, conn):
    """With PYTHONIOENCODING=ascii (or LC_ALL=C without UTF-8 mode), ctq runs died with
    UnicodeEncodeError on a run named in another script (a user trial)."""
    a = runs["a"]
    await conn.execute("UPDATE ctq.runs SET name = 'prévision ✓' WHERE run_id = $1", a)
    try:
        for args in (("runs",), ("models", str(a)), ("compare", str(a), str(runs["b"]))):
            proc = run_cli(*args, env={"PYTHONIOENCODING": "ascii"})
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "pr\\xe9vision" in run_cli("runs", env={"PYTHONIOENCODING": "ascii"}).stdout
    finally:
        await conn.execute("UPDATE ctq.runs SET name = 'rep-a' WHERE run_id = $1", a)


@pytest.mark.parametrize("columns", [50, 90])
async def test_a_narrow_terminal_still_shows_each_runs_id_and_score(runs, dsn, ctq_home, conn, columns):
    """On a 20-60 column terminal ctq runs cut the run id and score to '…' and ctq models dropped
    the model's name (a user trial): the secondary columns go first."""
    import pty
    import subprocess
    import sys

    from conftest import read_terminal

    best = await conn.fetchrow("SELECT name, score FROM ctq.leaderboard WHERE run_id = $1 AND rank = 1", runs["a"])
    for args in (("runs", "--name", "rep-a"), ("models", str(runs["a"]))):
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", *args], stdout=slave, stderr=subprocess.PIPE,
                                env=dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home), TERM="xterm",
                                         COLUMNS=str(columns)))
        os.close(slave)
        shown = re.sub(r"\x1b\[[0-9;]*m", "", read_terminal(master).decode(errors="replace"))
        proc.communicate(timeout=120)
        os.close(master)
        assert proc.returncode == 0 and f"{best['score']:.4f}" in shown, shown
        assert (f" {runs['a']} " in shown) if args[0] == "runs" else best["name"][:6] in shown, shown


async def test_views_return_what_the_catalog_says(runs, conn):
    run_id = runs["a"]
    curves = await conn.fetch("SELECT * FROM ctq.learning_curves WHERE run_id = $1 ORDER BY model_id, epoch", run_id)
    epochs = await conn.fetch("SELECT e.*, m.name FROM ctq.epochs e JOIN ctq.models m USING (run_id, model_id) "
                              "WHERE run_id = $1 ORDER BY model_id, epoch", run_id)
    assert len(curves) == len(epochs) == 2 * 2
    for c, e in zip(curves, epochs):
        assert (c["model_id"], c["model"], c["epoch"]) == (e["model_id"], e["name"], e["epoch"] + 1)
        for key in ("train_loss", "train_metric", "val_loss", "val_metric"):
            assert c[key] == e[key]
    hops = await conn.fetch("SELECT * FROM ctq.hops WHERE run_id = $1", run_id)
    span = (max(h["finished_at"] for h in hops) - min(h["started_at"] for h in hops)).total_seconds()
    for row in await conn.fetch("SELECT * FROM ctq.segment_utilization WHERE run_id = $1", run_id):
        mine = [h for h in hops if h["segment"] == row["segment"]]
        busy = sum((h["finished_at"] - h["started_at"]).total_seconds() for h in mine)
        assert row["hops"] == len(mine) == 4
        assert row["busy_seconds"] == pytest.approx(busy, abs=1e-5)
        assert row["compute_seconds"] == pytest.approx(sum(h["compute_seconds"] for h in mine))
        assert row["utilization"] == pytest.approx(busy / span, rel=1e-6) and 0 < row["utilization"] <= 1


async def test_views_keep_one_analysts_runs_from_another(runs, conn, dsn):
    """Alice (owner of run a here) sees it through the views; bob sees nothing, not even with a
    leaky function of his own in the WHERE clause (the views are security barriers)."""
    roles = ("ctq_rep_alice", "ctq_rep_bob")
    for role in roles:
        await conn.execute(f"DROP ROLE IF EXISTS {role}")
        await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE ctq_user")
    run_id = runs["a"]
    owner = await conn.fetchval("SELECT run_by FROM ctq.runs WHERE run_id = $1", run_id)
    await conn.execute("UPDATE ctq.runs SET run_by = 'ctq_rep_alice' WHERE run_id = $1", run_id)
    host = dsn.split("@", 1)[1] if "@" in dsn else dsn.split("://", 1)[1]
    try:
        views = ("ctq.leaderboard", "ctq.learning_curves", "ctq.segment_utilization")
        alice = await asyncpg.connect(f"postgresql://ctq_rep_alice@{host}")
        try:
            for view in views:
                assert await alice.fetchval(f"SELECT count(*) FROM {view} WHERE run_id = $1", run_id) > 0, view
        finally:
            await alice.close()
        bob = await asyncpg.connect(f"postgresql://ctq_rep_bob@{host}")
        seen = []
        bob.add_log_listener(lambda _c, message: seen.append(message.message))
        try:
            await bob.execute("CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 "
                              "AS $$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$")
            for view in views:
                assert await bob.fetchval(f"SELECT count(*) FROM {view}") == 0, view
            for view, column in (("ctq.learning_curves", "model"), ("ctq.leaderboard", "name"),
                                 ("ctq.segment_utilization", "segment::text")):
                assert await bob.fetch(f"SELECT * FROM {view} WHERE pg_temp.leak({column})") == []
            assert seen == []
        finally:
            await bob.close()
    finally:
        await conn.execute("UPDATE ctq.runs SET run_by = $2 WHERE run_id = $1", run_id, owner)
        for role in roles:
            await conn.execute(f"DROP ROLE {role}")


async def test_views_are_created_on_upgrade(runs, conn, dsn):
    """An install made before the views existed gets them (and the leaderboard's barrier) from
    `ctq install`."""
    from ctq import api

    await conn.execute("DROP VIEW ctq.learning_curves; DROP VIEW ctq.segment_utilization; "
                       "ALTER VIEW ctq.leaderboard RESET (security_barrier)")
    await api.install(dsn)
    options = dict(await conn.fetch(
        "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'ctq' AND c.relkind = 'v'"))
    for view in ("leaderboard", "learning_curves", "segment_utilization"):
        assert options[view] == ["security_barrier=true"], view
    assert await conn.fetchval("SELECT count(*) FROM ctq.learning_curves WHERE run_id = $1", runs["a"]) == 4


async def test_greenplum_gets_the_views_and_queries_in_postgresql_9_4_syntax():
    """Greenplum 6 (PostgreSQL 9.4) has security_barrier views but not security_invoker, nor
    pg_partition_tree or to_regclass(text)."""
    from ctq.engines import GreenplumEngine
    from ctq.sql import install_script

    sql = re.sub(r"--[^\n]*", "", install_script("greenplum"))
    assert "security_invoker" not in sql
    assert "ALTER VIEW ctq.leaderboard SET (security_barrier = true);" in sql
    for view in ("learning_curves", "segment_utilization"):
        assert f"CREATE OR REPLACE VIEW ctq.{view} WITH (security_barrier = true) AS" in sql
    engine = GreenplumEngine()
    size = engine.render("relation_size.sql", oid="c.oid").strip()
    for name in ("packs.sql", "orphan_packs.sql"):
        text = engine.render(name, size=size)
        assert "pg_partition_tree" not in text and "to_regclass" not in text and "pg_total_relation_size(c.oid)" in text


async def test_every_model_keeps_its_own_colour_beyond_twenty():
    from ctq.report import model_colours

    for count in (5, 20, 21, 300):
        colours = model_colours(range(1, count + 1))
        assert len(set(colours.values())) == count, count

"""`ctq train` end to end: real PostgreSQL, real Keras inside it, the real CLI in a subprocess."""

from __future__ import annotations

import json
import re
from collections import defaultdict

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
      - name: small
        layers:
          - {{dense: 16, activation: relu}}
      - name: wide
        layers:
          - {{dense: 512, activation: relu}}
          - {{dense: 512, activation: relu}}
    search:
      method: grid
      seed: 1
      space:
        optimizer: [adam]
        learning_rate: [0.003, 0.03]
        batch_size: [32]
    epochs: 2
    metric: val_accuracy
"""


async def hop_log(conn, run_id):
    return [dict(r) for r in await conn.fetch(
        "SELECT model_id, epoch, segment, started_at, finished_at, rows, loss FROM ctq.hops "
        "WHERE run_id = $1 ORDER BY started_at", run_id)]


def overlaps(a, b) -> bool:
    return a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


@pytest.fixture(scope="module")
def mop_run(small_table, tmp_path_factory, dsn, ctq_home):
    import os
    import subprocess
    import sys

    grid = write_grid(tmp_path_factory.mktemp("mop"), GRID.format(name="e2e-mop", table=small_table))
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home))
    # (--resume auto, as in a cron job: no unfinished run of this grid, so a new run starts)
    proc = subprocess.run([sys.executable, "-m", "ctq.cli", "train", str(grid), "--resume", "auto", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_json_output_has_the_documented_keys(mop_run):
    for key in ("run_id", "status", "best_model_id", "best_metric", "wall_seconds"):
        assert key in mop_run
    assert mop_run["status"] == "succeeded"
    assert len(mop_run["leaderboard"]) == 4


async def test_the_compute_share_is_the_recorded_hops_compute_over_the_segments_time(mop_run, conn):
    """The JSON's compute_share is the hops' compute seconds, as ctq.hops records them (measured
    in the server around Keras' training and evaluation), over segments x the hop schedule's wall
    time; segment_utilization (each hop statement as the coordinator waited for it) is at least
    that. ctq.segment_utilization gives the same share per segment over the run's span."""
    hops = await conn.fetch("SELECT segment, compute_seconds, started_at, finished_at FROM ctq.hops "
                            "WHERE run_id = $1", mop_run["run_id"])
    compute = sum(h["compute_seconds"] for h in hops)
    assert compute > 0
    assert mop_run["compute_share"] == pytest.approx(compute / (2 * mop_run["schedule_seconds"]), abs=1e-3)  # (both rounded)
    assert 0 < mop_run["compute_share"] < mop_run["segment_utilization"] <= 1.0
    span = (max(h["finished_at"] for h in hops) - min(h["started_at"] for h in hops)).total_seconds()
    for row in await conn.fetch("SELECT segment, compute_share FROM ctq.segment_utilization WHERE run_id = $1",
                                mop_run["run_id"]):
        mine = sum(h["compute_seconds"] for h in hops if h["segment"] == row["segment"])
        assert row["compute_share"] == pytest.approx(mine / span)


async def test_a_replay_at_the_runs_segment_count_comes_within_ten_percent_of_its_schedule(mop_run, run_cli):
    """`ctq simulate --replay` of a run's own hops (per model and segment, plus the coordinator's
    median turn-around) predicts the measured span of its hop schedule within 10 %."""
    proc = run_cli("simulate", "--replay", str(mop_run["run_id"]), "--segments", "2,4", "--json")
    assert proc.returncode == 0, proc.stderr
    own, other = json.loads(proc.stdout)
    assert own["measured_span"] == pytest.approx(mop_run["schedule_seconds"], abs=1e-3)
    assert 0 < own["gap_seconds"] < 0.1
    assert own["mop_makespan"] == pytest.approx(own["measured_span"], rel=0.10)
    assert other["segments"] == 4 and other["measured_span"] is None
    assert "replayed MOP (cost) / measured" in run_cli("simulate", "--replay", str(mop_run["run_id"]),
                                                        "--segments", "2").stdout


async def test_every_model_visits_every_segment_once_per_epoch(mop_run, conn):
    hops = await hop_log(conn, mop_run["run_id"])
    assert len(hops) == 4 * 2 * 2  # models x epochs x segments
    visits = defaultdict(list)
    for h in hops:
        visits[(h["model_id"], h["epoch"])].append(h["segment"])
    assert set(visits) == {(m, e) for m in range(1, 5) for e in range(2)}
    assert all(sorted(segs) == [0, 1] for segs in visits.values())


async def test_no_model_and_no_segment_runs_two_hops_at_once(mop_run, conn):
    hops = await hop_log(conn, mop_run["run_id"])
    for i, a in enumerate(hops):
        for b in hops[i + 1:]:
            if a["model_id"] == b["model_id"] or a["segment"] == b["segment"]:
                assert not overlaps(a, b), (a, b)


async def test_a_models_epochs_are_in_order(mop_run, conn):
    hops = await hop_log(conn, mop_run["run_id"])
    for model in range(1, 5):
        mine = [h for h in hops if h["model_id"] == model]
        last_of_0 = max(h["finished_at"] for h in mine if h["epoch"] == 0)
        first_of_1 = min(h["started_at"] for h in mine if h["epoch"] == 1)
        assert last_of_0 <= first_of_1


async def test_leaderboard_matches_epochs_table_and_models_learn(mop_run, conn):
    rows = await conn.fetch(
        "SELECT model_id, val_metric, val_loss FROM ctq.epochs WHERE run_id = $1 AND epoch = 1", mop_run["run_id"])
    final = {r["model_id"]: r["val_metric"] for r in rows}
    val_loss = {r["model_id"]: r["val_loss"] for r in rows}
    assert len(final) == 4
    board = {row["model_id"]: row for row in mop_run["leaderboard"]}
    for model_id, metric in final.items():
        assert board[model_id]["val_metric"] == pytest.approx(metric)
        assert board[model_id]["status"] == "succeeded"
        assert board[model_id]["epochs_done"] == 2
    best = max(final.values())
    assert mop_run["best_metric"] == pytest.approx(best)
    # the best score wins; on a tie (same val_accuracy), the lower validation loss
    assert mop_run["best_model_id"] == min(final, key=lambda m: (-final[m], val_loss[m]))
    assert best > 0.6  # three balanced classes: chance is 1/3


async def test_warmup_timing_starts_the_slow_models_first(mop_run, conn):
    """The cost-aware rule knows from the warm-up (one timed training step of each model on each
    segment) that the 512x512 models are the slow ones: they take the first hop on both segments,
    before any hop has been timed (with nothing to go on, the seeded preference would decide)."""
    names = dict(await conn.fetch("SELECT model_id, name FROM ctq.models WHERE run_id = $1", mop_run["run_id"]))
    hops = await hop_log(conn, mop_run["run_id"])
    first = {seg: min((h for h in hops if h["segment"] == seg), key=lambda h: h["started_at"]) for seg in (0, 1)}
    assert all(names[h["model_id"]].startswith("wide") for h in first.values()), (first, names)
    from ctq.scheduler import MopScheduler

    blind = MopScheduler(sorted(names), 2, 2, seed=1).next_hops()  # the same rule, no estimates
    assert not any(names[h.model_id].startswith("wide") for h in blind)


def staggered_starts(hops, share: float = 0.3, min_gap: float = 0.02) -> int:
    """Hops that start while another segment is well into a hop (past ``share`` of it, and at least
    ``min_gap`` seconds): impossible under a round barrier, where a round's hops start together."""
    def into(a, b) -> float:
        return (a["started_at"] - b["started_at"]).total_seconds()

    return sum(
        1 for a in hops for b in hops
        if a["segment"] != b["segment"] and b["started_at"] < a["started_at"] < b["finished_at"]
        and into(a, b) > max(min_gap, share * (b["finished_at"] - b["started_at"]).total_seconds())
    )


UNEVEN = """
    name: e2e-uneven
    data:
      table: {table}
      features: [f1, f2, f3, f4, f5, f6, f7, f8]
      label: label
      task: classification
    segments: 2
    models:
      - name: small
        layers: [{{dense: 8, activation: relu}}]
      - name: middle
        layers: [{{dense: 256, activation: relu}}]
      - name: wide
        layers: [{{dense: 512, activation: relu}}, {{dense: 512, activation: relu}}, {{dense: 512, activation: relu}}]
    search:
      method: grid
      space: {{optimizer: [adam], learning_rate: [0.01], batch_size: [32]}}
    epochs: 2
    metric: val_accuracy
"""


async def test_segments_do_not_wait_for_each_other(small_table, tmp_path, run_cli, conn):
    """MOP has no barrier: a freed segment starts its next hop while the other is still busy. Three
    models of different sizes on two segments (the MOP run above pairs equal models, whose hops may
    well end together, so that it can look like rounds without any barrier)."""
    proc = run_cli("train", str(write_grid(tmp_path, UNEVEN.format(table=small_table))), "--json")
    assert proc.returncode == 0, proc.stderr
    assert staggered_starts(await hop_log(conn, json.loads(proc.stdout)["run_id"])) > 0


async def test_bsp_schedule_runs_in_rounds(small_table, tmp_path, run_cli, conn):
    grid = write_grid(tmp_path, GRID.format(name="e2e-bsp", table=small_table))
    proc = run_cli("train", str(grid), "--json", "--schedule", "bsp")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    hops = await hop_log(conn, run["run_id"])
    assert len(hops) == 16
    assert staggered_starts(hops) == 0
    schedule = await conn.fetchval("SELECT schedule FROM ctq.runs WHERE run_id = $1", run["run_id"])
    assert schedule == "bsp"


async def test_second_run_reuses_the_pack_and_runs_lists_both(mop_run, small_table, tmp_path, run_cli):
    grid = write_grid(tmp_path, GRID.format(name="e2e-again", table=small_table).replace("epochs: 2", "epochs: 1"))
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["pack_reused"] is True
    listed = run_cli("runs", "--json")
    assert listed.returncode == 0
    ids = [r["run_id"] for r in json.loads(listed.stdout)]
    assert mop_run["run_id"] in ids and again["run_id"] in ids
    board = run_cli("models", str(again["run_id"]), "--json")
    assert board.returncode == 0
    assert len(json.loads(board.stdout)) == 4


async def test_changed_source_is_packed_again(conn, tmp_path, run_cli):
    from conftest import create_table

    await create_table(conn, "public.changing", 600, seed=5)
    grid = write_grid(tmp_path, GRID.format(name="changing", table="public.changing")
                      .replace("epochs: 2", "epochs: 1").replace("[0.003, 0.03]", "[0.01]"))
    first = run_cli("train", str(grid), "--json")
    assert first.returncode == 0, first.stderr
    await conn.execute("UPDATE public.changing SET f1 = f1 + 1 WHERE label = 0")
    second = run_cli("train", str(grid), "--json")
    assert second.returncode == 0, second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    packs = await conn.fetch("SELECT pack_id FROM ctq.runs WHERE run_id = ANY($1::bigint[])", [a["run_id"], b["run_id"]])
    assert len({p["pack_id"] for p in packs}) == 2
    assert b["pack_reused"] is False


async def test_json_figures_agree_with_the_catalog(mop_run, conn, dsn, ctq_home):
    run_id = mop_run["run_id"]
    hops = await conn.fetch("SELECT started_at, finished_at FROM ctq.hops WHERE run_id = $1", run_id)
    assert mop_run["hops"] == mop_run["run_hops"] == len(hops) == 4 * 2 * 2
    span = (max(h["finished_at"] for h in hops) - min(h["started_at"] for h in hops)).total_seconds()
    busy = sum((h["finished_at"] - h["started_at"]).total_seconds() for h in hops)
    # one definition of the figures: the hop schedule is the recorded hops' span, utilization their
    # time over segments x span, the same as `ctq compare` (and `ctq report`) print for the run
    assert mop_run["schedule_seconds"] == pytest.approx(span, abs=1e-3)
    assert mop_run["segment_utilization"] == pytest.approx(busy / (2 * span), abs=1e-4)
    from conftest import ctq_cli

    compared = json.loads((await ctq_cli(dsn, ctq_home, "compare", str(run_id), str(run_id), "--json"))[1])
    side = compared["runs"][0]
    for key in ("segment_utilization", "compute_share", "schedule_seconds"):
        assert side[key] == pytest.approx(mop_run[key], abs=1e-3), key
    models = {r["model_id"]: r for r in await conn.fetch(
        "SELECT model_id, status, epochs_done, val_loss, val_metric FROM ctq.models WHERE run_id = $1", run_id)}
    for row in mop_run["leaderboard"]:
        m = models[row["model_id"]]
        assert (row["status"], row["epochs_done"], row["val_loss"], row["val_metric"]) == \
               (m["status"], m["epochs_done"], m["val_loss"], m["val_metric"])
    assert mop_run["best_metric"] == max(m["val_metric"] for m in models.values())
    assert mop_run["best_metric"] == models[mop_run["best_model_id"]]["val_metric"]


TINY = GRID.replace("learning_rate: [0.003, 0.03]", "learning_rate: [0.01]").replace("epochs: 2", "epochs: 1")


async def test_every_column_with_nulls_is_named_in_one_message(conn, tmp_path, run_cli):
    from conftest import create_table

    await create_table(conn, "public.holes", 300, seed=3)
    await conn.execute("UPDATE public.holes SET f2 = NULL WHERE label = 0; "
                       "UPDATE public.holes SET f5 = NULL WHERE label = 1")
    holes = await conn.fetchrow("SELECT count(*) - count(f2) AS f2, count(*) - count(f5) AS f5 FROM public.holes")
    proc = run_cli("train", str(write_grid(tmp_path, TINY.format(name="holes", table="public.holes"))))
    assert proc.returncode == 2, proc.stderr
    assert (f"data.features: 2 columns have NULL values (of 300 rows): 'f2' ({holes['f2']}), "
            f"'f5' ({holes['f5']}); filter or impute") in proc.stderr, proc.stderr


async def test_a_label_of_many_numeric_classes_gets_the_regression_hint(conn, tmp_path, run_cli):
    """sklearn's diabetes target (214 whole numbers in 442 rows) as task: classification trained
    without a word; now the log says the split's sizes and hints at regression."""
    from conftest import create_table

    await create_table(conn, "public.continuous", 300, seed=4)
    await conn.execute("UPDATE public.continuous SET label = abs((f1 * 1000)::int) % 60")
    classes = await conn.fetchval("SELECT count(DISTINCT label) FROM public.continuous")
    assert classes > 30
    grid = TINY.format(name="continuous", table="public.continuous").replace("[f1, f2,", "[F1, f2,")  # finds f1
    proc = run_cli("train", str(write_grid(tmp_path, grid)))
    assert proc.returncode == 0, proc.stderr
    assert (f"data.label: {classes} classes in 300 rows ({300 / classes:.1f} rows each) from the numbers of "
            "column 'label': is it a continuous target (task: regression)?") in proc.stderr, proc.stderr
    assert "rows to train on, " in proc.stderr and " to validate" in proc.stderr


async def test_features_all_takes_every_column_but_the_label_and_the_excluded(conn, tmp_path, run_cli):
    """features: all (issue 20: 30 quoted names typed for breast-cancer): every column of the table
    but the label and data.exclude, in the table's order; a text column is named with the fix."""
    from conftest import create_table

    await create_table(conn, "public.everything", 400, seed=6)
    await conn.execute("ALTER TABLE public.everything ADD COLUMN id serial, ADD COLUMN note text DEFAULT 'x'")
    grid = TINY.format(name="everything", table="public.everything").replace(
        "features: [f1, f2, f3, f4, f5, f6, f7, f8]", "features: all\n      exclude: [id, note]")
    proc = run_cli("train", str(write_grid(tmp_path, grid)), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    settings = await conn.fetchval("SELECT p.settings FROM ctq.packs p JOIN ctq.runs r USING (pack_id) "
                                   "WHERE r.run_id = $1", run_id)
    assert json.loads(settings)["features"] == [f"f{i}" for i in range(1, 9)]
    proc = run_cli("train", str(write_grid(tmp_path, grid.replace("exclude: [id, note]", "exclude: [id]"))))
    assert proc.returncode == 2 and "column 'note' has type text" in proc.stderr \
        and "add it to data.exclude" in proc.stderr, proc.stderr


async def test_the_validation_rows_of_a_run_as_a_table(conn, tmp_path, run_cli):
    """`ctq validation RUN --out T`: the rows the run held out, every column, so a baseline can be
    scored on them: as many as the log said, and the best model's loss on them is the validation
    loss the run recorded. Once the source changes, its split cannot be told: refused."""
    from conftest import create_table

    await create_table(conn, "public.heldout_src", 900, seed=8)
    proc = run_cli("train", str(write_grid(tmp_path, TINY.format(name="heldout", table="public.heldout_src"))),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    said = int(re.search(r"(\d+) to validate", proc.stderr).group(1))
    made = run_cli("validation", str(run["run_id"]), "--out", "public.heldout_rows", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["rows"] == said == await conn.fetchval("SELECT count(*) FROM public.heldout_rows")
    scored = run_cli("evaluate", str(run["run_id"]), "--table", "public.heldout_rows", "--json")
    assert scored.returncode == 0, scored.stderr
    best = next(r for r in run["leaderboard"] if r["model_id"] == run["best_model_id"])
    assert json.loads(scored.stdout)["loss"] == pytest.approx(best["val_loss"], rel=1e-3)
    again = run_cli("validation", str(run["run_id"]), "--out", "public.heldout_rows")
    assert again.returncode == 2 and "use --replace" in again.stderr
    # an update to the same values moves its rows, and the split is keyed on a row's place: it says so
    await conn.execute("UPDATE public.heldout_src SET f1 = f1 WHERE label = 0")
    changed = run_cli("validation", str(run["run_id"]), "--out", "public.heldout_rows", "--replace")
    assert changed.returncode == 2 and "has changed since it was packed" in changed.stderr, changed.stderr
    assert "updated, even to the same values" in changed.stderr, changed.stderr
    assert await conn.fetchval("SELECT count(*) FROM public.heldout_rows") == said  # kept


async def test_plain_output_without_a_terminal(small_table, tmp_path, run_cli):
    grid = write_grid(tmp_path, TINY.format(name="plain", table=small_table))
    proc = run_cli("train", str(grid))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr  # no terminal codes in a log
    assert "warming up 2 segments" in proc.stderr
    # each segment's warm-up is said as it ends, and an ETA from the warm-up's estimates right after it
    assert "segment 0 warmed up in " in proc.stderr and "segment 1 warmed up in " in proc.stderr
    assert re.search(r"warm-up done in \d+s, training, ETA \d", proc.stderr), proc.stderr
    assert "small" in proc.stdout and "wide" in proc.stdout  # the leaderboard


async def test_live_display_on_a_terminal(small_table, tmp_path, dsn, ctq_home):
    import os
    import pty
    import subprocess
    import sys
    import threading

    grid = write_grid(tmp_path, TINY.format(name="live", table=small_table))
    master, slave = pty.openpty()
    env = dict(os.environ, CTQ_DSN=dsn, CTQ_HOME=str(ctq_home), COLUMNS="150", LINES="40", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "ctq.cli", "train", str(grid)], stdout=slave,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def read():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _, err = proc.communicate(timeout=600)
    reader.join(timeout=10)
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, err
    assert "\x1b[?25l" in out  # the live display hides the cursor while it redraws in place
    run_id = int(out.split("run ", 1)[1].split()[0])
    assert "/4 hops" in out and f"run {run_id} " in out  # its head line: hops done of the run's 4
    assert "ETA " in out  # from the warm-up's estimates
    assert "warming up" not in err.decode()  # not the plain log


def test_cores_per_segment_beyond_the_machine_is_noted():
    """64 cores a segment on a 2-core machine was accepted silently (a user trial): the segments
    share the cores, so the run says so and what setting gives each its own."""
    from ctq.coordinator import shared_cores

    assert shared_cores(2, 2, 64) == ("cores_per_segment 64 x 2 segments asks for 128 cores, but this machine has 2: "
                                      "the segments share them (set cores_per_segment to at most 1 for a core of "
                                      "their own)")
    assert shared_cores(2, 8, 4) is None and shared_cores(4, 2, None) is None

"""`ctq rm` and `ctq packs` / `ctq packs gc` on the real server: exactly the named runs go, a live
run and unknown ids are refused with nothing deleted, and only packs no run uses are dropped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import asyncpg
import pytest

from conftest import write_grid

pytestmark = pytest.mark.asyncio(loop_scope="session")

# its own seed, so its pack is not shared with other test modules' runs
GRID = """
    name: {name}
    data:
      table: {table}
      features: [f1, f2, f3, f4, f5, f6, f7, f8]
      label: label
      task: classification
      validation_fraction: 0.25
    segments: 2
    models:
      - name: tiny
        layers:
          - {{dense: 4, activation: relu}}
    search:
      method: grid
      seed: 29
      space:
        optimizer: [adam]
        learning_rate: [0.01]
        batch_size: [128]
    epochs: 1
    metric: val_accuracy
"""

TABLES = ("ctq.runs", "ctq.models", "ctq.hops", "ctq.epochs")


@pytest.fixture(scope="module")
async def runs(small_table, tmp_path_factory, dsn):
    """x: a tiny finished run. y: a run of the same pack that a coordinator has just started (its
    catalog rows written, its lock held: what `ctq train` does before the first hop). z: a pack
    packed with another seed (a pack's settings include the seed) that no run uses."""
    from ctq import api, catalog
    from ctq.config import load_config
    from ctq.engines import detect
    from ctq.packing import Pack, ensure_pack, inspect_source

    d = tmp_path_factory.mktemp("housekeeping")
    x = await api.train(str(write_grid(d, GRID.format(name="hk-x", table=small_table), "x.yaml")), dsn)
    assert x.status == "succeeded"
    c = await asyncpg.connect(dsn)
    coordinator = await asyncpg.connect(dsn)
    try:
        x_pack = await c.fetchval("SELECT pack_id FROM ctq.runs WHERE run_id = $1", x.run_id)
        y_config = load_config(write_grid(d, GRID.format(name="hk-y", table=small_table), "y.yaml"))
        y = await catalog.create_run(c, config=y_config, pack=Pack(x_pack, "", {}, reused=True), segments=2,
                                     schedule="mop", versions=api.versions())
        assert await catalog.lock_run(coordinator, y)
        z_config = load_config(write_grid(d, GRID.format(name="hk-z", table=small_table)
                                          .replace("seed: 29", "seed: 31"), "z.yaml"))
        engine = await detect(c)
        async with engine.snapshot(dsn) as moment:
            source = await inspect_source(moment.conn, z_config.data, engine, z_config.seed)
            z_pack = (await ensure_pack(c, dsn, engine, z_config.data, source, 2, z_config.seed, moment)).pack_id
        assert z_pack != x_pack
        yield {"x": x.run_id, "y": y, "x_pack": x_pack, "z_pack": z_pack, "coordinator": coordinator}
    finally:
        await coordinator.close()
        await c.close()


async def rows_of(conn, run_id) -> dict:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t} WHERE run_id = $1", run_id) for t in TABLES}


async def test_rm_deletes_exactly_the_named_runs_and_refuses_a_live_or_unknown_one(runs, run_cli, conn, dsn):
    x, y = runs["x"], runs["y"]
    before = {x: await rows_of(conn, x), y: await rows_of(conn, y)}
    assert all(n > 0 for n in before[x].values()) and before[y]["ctq.models"] == 1
    total = await conn.fetchval("SELECT count(*) FROM ctq.runs")

    proc = run_cli("rm", str(x), str(y), "--yes")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: run {y} is being driven by a live ctq process; stop it (Ctrl-C or SIGTERM) before deleting "
        "it; nothing deleted"), proc.stderr
    proc = run_cli("rm", str(x), "999999", "--yes", "--dsn", dsn)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: no run with id 999999; nothing deleted"
    proc = run_cli("rm", str(x))  # no terminal to ask on, no --yes
    assert proc.returncode == 2 and "pass --yes" in proc.stderr
    assert {x: await rows_of(conn, x), y: await rows_of(conn, y)} == before

    proc = run_cli("rm", str(x), "--yes")
    assert proc.returncode == 0 and proc.stdout.strip() == f"deleted 1 run(s): {x}", proc.stderr
    assert await rows_of(conn, x) == dict.fromkeys(TABLES, 0)
    assert await rows_of(conn, y) == before[y]
    assert await conn.fetchval("SELECT count(*) FROM ctq.runs") == total - 1


async def test_report_of_a_run_that_has_just_started(runs, run_cli, tmp_path):
    """(here because y is such a run) No hop yet: no timeline, no curves, the status as it is."""
    out = tmp_path / "y.html"
    proc = run_cli("report", str(runs["y"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert '<span class="status status-running">running</span>' in text and "no hop recorded yet" in text
    assert "no completed epoch" in text and "<svg" not in text


async def test_gc_and_rm_need_the_rights_to_delete(runs, run_cli, conn, dsn):
    role = "ctq_hk_analyst"
    await conn.execute(f"DROP ROLE IF EXISTS {role}")
    await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE ctq_user")
    host = dsn.split("@", 1)[1] if "@" in dsn else dsn.split("://", 1)[1]
    await runs["coordinator"].execute("SELECT pg_advisory_unlock_all()")  # y's coordinator has stopped
    y = runs["y"]
    try:
        analyst = {"CTQ_DSN": f"postgresql://{role}@{host}"}
        proc = run_cli("packs", "gc", "--yes", env=analyst)
        assert proc.returncode == 2 and proc.stderr.strip() == (
            f"error: role {role} may not drop packs (they belong to the analysts who packed them); ask an "
            "administrator (the installer) to run: ctq packs gc"), proc.stderr
        await conn.execute("UPDATE ctq.runs SET run_by = $2 WHERE run_id = $1", y, role)
        proc = run_cli("rm", str(y), "--yes", env=analyst)
        assert proc.returncode == 2 and f"role {role} may not delete runs" in proc.stderr, proc.stderr
        assert await conn.fetchval("SELECT count(*) FROM ctq.runs WHERE run_id = $1", y) == 1
    finally:
        await conn.execute("UPDATE ctq.runs SET run_by = current_user WHERE run_by = $1", role)
        await conn.execute(f"DROP ROLE {role}")


async def test_packs_lists_sizes_and_users_and_gc_drops_only_unused_ones(runs, run_cli, conn, dsn):
    used_pack, unused_pack = runs["x_pack"], runs["z_pack"]  # x is gone, y still uses x's pack
    # besides z's pack: a table left by a packing that died, and one being packed right now
    orphan, packing = "f0f0f0f0f0f0f0f0", "e1e1e1e1e1e1e1e1"
    for pack_id in (orphan, packing):
        await conn.execute(f"CREATE TABLE ctq_data.pack_{pack_id} (segment int, x bytea)")
    packer = await asyncpg.connect(dsn)
    try:
        await packer.execute("SELECT pg_advisory_lock(hashtext($1))", packing)  # as ensure_pack holds it
        proc = run_cli("packs", "--json")
        assert proc.returncode == 0, proc.stderr
        listing = json.loads(proc.stdout)
        packs = {p["pack_id"]: p for p in listing["packs"]}
        for pack_id, runs_using in ((used_pack, 1), (unused_pack, 0)):
            size = await conn.fetchval("SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree($1::regclass)",
                                       f"ctq_data.pack_{pack_id}")
            assert packs[pack_id]["runs"] == runs_using and packs[pack_id]["bytes"] == size > 0
            assert packs[pack_id]["source_table"] == "public.small" and packs[pack_id]["rows"] == 3000
        assert {orphan, packing} <= {p["pack_id"] for p in listing["orphans"]}
        proc = run_cli("packs")
        assert proc.returncode == 0 and used_pack in proc.stdout and "orphaned" in proc.stdout

        others = {p["pack_id"] for p in listing["packs"] if p["runs"] == 0} - {unused_pack}
        proc = run_cli("packs", "gc", "--yes", "--json")
        assert proc.returncode == 0, proc.stderr
        dropped = set(json.loads(proc.stdout)["dropped"])
        assert {unused_pack, orphan} <= dropped and dropped <= {unused_pack, orphan} | others
        remaining = {r["pack_id"] for r in await conn.fetch("SELECT pack_id FROM ctq.packs")}
        assert used_pack in remaining and unused_pack not in remaining
        for pack_id, exists in ((used_pack, True), (unused_pack, False), (orphan, False), (packing, True)):
            assert (await conn.fetchval("SELECT to_regclass($1)", f"ctq_data.pack_{pack_id}") is not None) == exists
    finally:
        await packer.close()
        await conn.execute(f"DROP TABLE ctq_data.pack_{packing}")
    # once its last run is deleted, the pack goes too
    assert run_cli("rm", str(runs["y"]), "--yes").returncode == 0
    proc = run_cli("packs", "gc", "--yes", "--json")
    assert used_pack in json.loads(proc.stdout)["dropped"]


ASHA_GRID = """
    name: {name}
    data: {{table: {table}, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label, task: classification,
           validation_fraction: 0.25}}
    segments: 2
    models: [{{name: tiny, layers: [{{dense: 4, activation: relu}}]}}]
    search: {{method: asha, seed: 29, max_epochs: 2, reduction_factor: 2,
             space: {{learning_rate: [0.01, 0.0001], batch_size: [128]}}}}
    metric: val_accuracy
"""


async def tables_with_a_run_id(conn) -> list[str]:
    """Every table of ctq's schemas with a run_id column, read from the server's catalog (so a table
    added later is checked too)."""
    return [r["t"] for r in await conn.fetch(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS t FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE n.nspname IN ('ctq', 'ctq_catalog', 'ctq_data') AND c.relkind IN ('r', 'p') "
        "AND a.attname = 'run_id' AND NOT a.attisdropped ORDER BY 1")]


async def test_rm_leaves_no_row_of_the_run_in_any_table_even_where_nothing_cascades(small_table, tmp_path, dsn,
                                                                                   run_cli, conn):
    """A run with rows in every table that refers to runs (an ASHA run: decisions too) is deleted by
    `ctq rm` in a session whose foreign keys do not cascade (session_replication_role = replica
    fires no trigger, and PostgreSQL's cascades are triggers): as on Greenplum, which does not
    enforce foreign keys, rm must delete from each table itself."""
    from ctq import api

    run = await api.train(str(write_grid(tmp_path, ASHA_GRID.format(name="hk-all", table=small_table))), dsn)
    tables = await tables_with_a_run_id(conn)
    assert {"ctq.runs", "ctq.models", "ctq.model_states", "ctq.hops", "ctq.epochs", "ctq.decisions"} <= set(tables)
    # a finished run's states are all checkpoints: give it a working state too (a file in the
    # server's data directory: working_states_files.sql), as an unfinished run has
    folder = Path(await conn.fetchval("SELECT current_setting('data_directory')"), "ctq_states", str(
        await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")), str(run.run_id))
    owner = folder.parent.parent.parent.stat()
    folder.mkdir(parents=True)
    (folder / "1.3").write_bytes(b"a working state")
    for path in (folder, folder / "1.3"):
        os.chown(path, owner.st_uid, owner.st_gid)
    counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t} WHERE run_id = $1", run.run_id) for t in tables}
    assert all(n > 0 for n in counts.values()), counts
    proc = run_cli("rm", str(run.run_id), "--yes", env={"CTQ_DSN": dsn + "&session_replication_role=replica"})
    assert proc.returncode == 0 and proc.stdout.strip() == f"deleted 1 run(s): {run.run_id}", proc.stderr
    left = {t: n for t in tables if (n := await conn.fetchval(f"SELECT count(*) FROM {t} WHERE run_id = $1",
                                                               run.run_id))}
    assert left == {}, f"rows of run {run.run_id} left after ctq rm: {left}"
    assert not folder.exists(), "the run's working states are left after ctq rm"

"""What a pack holds: the seeded split and shuffle, the validation share, normalisation statistics
from the training rows, one partition per segment, and reuse by pack_id (the catalog's word, not
the flag the client reports). One run packs, a few more reuse it or pack anew."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import create_table, write_grid
from ctq.rules import PackStats

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRID = """
    name: {name}
    data: {{table: public.pack_src, features: [f1, f2, f3, f4, f5, f6, f7, f8], label: label,
            task: classification, validation_fraction: 0.25}}
    segments: 2
    models: [{{name: m, layers: [{{dense: 4}}]}}]
    search: {{seed: {seed}, space: {{batch_size: [500]}}}}
    epochs: 1
    metric: val_accuracy
"""


async def packed(conn, run_cli, tmp_path, name, seed, said: list | None = None):
    grid = write_grid(tmp_path, GRID.format(name=name, seed=seed), f"{name}.yaml")
    proc = run_cli("train", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    if said is not None:
        said.extend(proc.stderr.splitlines())
    run_id = json.loads(proc.stdout)["run_id"]
    return await conn.fetchrow("SELECT p.* FROM ctq.runs r JOIN ctq.packs p USING (pack_id) WHERE r.run_id = $1",
                               run_id)


async def test_pack_contents_and_reuse(conn, run_cli, tmp_path):
    from ctq.indb import decode_buffers

    await create_table(conn, "public.pack_src", 2400, seed=13)
    pack = await packed(conn, run_cli, tmp_path, "pack-a", seed=21)
    stats, table = PackStats.from_dict(json.loads(pack["stats"])), pack["table_name"]
    rows = await conn.fetch(f"SELECT segment, bucket, rows, x, y, k FROM {table}")

    # one partition per segment (each with its empty marker row) plus the validation rows
    assert {r["segment"] for r in rows} == {-1, 0, 1}
    markers = [r for r in rows if r["bucket"] == -1]
    assert sorted(r["segment"] for r in markers) == [0, 1] and all(r["rows"] == 0 for r in markers)

    # the validation share: exactly the rows whose seeded key falls under the cut
    expected_validation = await conn.fetchval(
        "SELECT count(*) FROM public.pack_src t WHERE abs(hashtidextended(t.ctid, 21) % 1000000) < 250000")
    parts = {s: decode_buffers([tuple(r)[2:] for r in rows if r["segment"] == s and r["bucket"] >= 0],
                               stats, "classification") for s in (-1, 0, 1)}
    assert len(parts[-1][0]) == stats.validation_rows == expected_validation
    assert 0.2 < expected_validation / 2400 < 0.3
    assert len(parts[0][0]) + len(parts[1][0]) == stats.train_rows == 2400 - expected_validation
    assert abs(len(parts[0][0]) - len(parts[1][0])) < 0.15 * stats.train_rows  # segments of similar size

    # every source row exactly once, normalised with the training rows' mean and standard deviation
    source = np.array([tuple(r) for r in await conn.fetch(
        "SELECT f1, f2, f3, f4, f5, f6, f7, f8 FROM public.pack_src")], np.float64)
    train = np.concatenate([parts[0][0], parts[1][0]])
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-3)
    mean, std = np.array(stats.mean), np.array(stats.std)
    restored = np.concatenate([train, parts[-1][0]]) * std + mean
    assert restored.shape == source.shape
    nearest = np.concatenate([((chunk[:, None, :] - source[None, :, :]) ** 2).sum(-1).argmin(1)
                              for chunk in np.array_split(restored, 8)])
    assert len(set(nearest.tolist())) == len(source)  # a permutation of the source rows
    np.testing.assert_allclose(restored, source[nearest], atol=2e-3)  # up to float32 rounding

    # the shuffle is seeded: segment 0 holds the same rows in the same order when packed again
    # with the same seed (the pack is reused, by pack_id) and other rows with another seed
    again = await packed(conn, run_cli, tmp_path, "pack-b", seed=21)
    assert again["pack_id"] == pack["pack_id"]
    assert await conn.fetchval("SELECT count(*) FROM ctq.packs WHERE source_table = $1",
                               pack["source_table"]) == 1
    said = []
    other = await packed(conn, run_cli, tmp_path, "pack-c", seed=22, said=said)
    assert other["pack_id"] != pack["pack_id"]
    # why the same rows are packed again (an upgrade's new layout did it without a word: a user trial)
    line = next(text for text in said if f"pack {other['pack_id']} written" in text)
    assert line.endswith(f"; pack {pack['pack_id']} of the same rows has other settings: seed 21 (now 22)"), line
    # rows changed (or the same rows loaded again: a new table): that is why
    await conn.execute("UPDATE public.pack_src SET f1 = f1 + 1 WHERE ctid = (SELECT min(ctid) FROM public.pack_src)")
    said.clear()
    changed = await packed(conn, run_cli, tmp_path, "pack-d", seed=22, said=said)
    line = next(text for text in said if f"pack {changed['pack_id']} written" in text)
    assert line.endswith(f"; pack {other['pack_id']} of public.pack_src holds other rows (the table has changed "
                         "since, or was loaded again)"), line
    other_rows = await conn.fetch(f"SELECT rows, x, y, k FROM {other['table_name']} WHERE segment = 0 AND bucket >= 0")
    other_x = decode_buffers([tuple(r) for r in other_rows], PackStats.from_dict(json.loads(other["stats"])), "classification")[0]
    assert len(other_x) != len(parts[0][0]) or not np.allclose(other_x, parts[0][0])


async def test_a_label_named_like_a_batch_column_is_checked_as_under_any_other_name(conn, tmp_path):
    """The check reads the label beside the batch row's columns (sql.column_batches: one
    subquery where the table fits one batch); a label named like one of them (ctq_batch, ctq_1,
    ctq_validation) is read through the source's alias instead, and the profile is the same as
    under a plain name."""
    from ctq.config import parse_config
    from ctq.engines import detect
    from ctq.packing import inspect_source
    from ctq.sql import column_batches

    await create_table(conn, "public.batch_names", 600, seed=4)
    engine = await detect(conn)
    profiles, previous = {}, "label"
    for name in ("label", "ctq_batch", "ctq_1", "ctq_validation"):
        await conn.execute(f"ALTER TABLE public.batch_names RENAME COLUMN {previous} TO {name}" if name != previous
                           else "SELECT 1")
        previous = name
        cfg = parse_config(GRID.format(name="batch-names", seed=1).replace("pack_src", "batch_names")
                           .replace("label: label", f"label: {name}"), source_path="<test>", base_dir=str(tmp_path))
        source = await inspect_source(conn, cfg.data, engine, cfg.seed)
        profiles[name] = (source.rows, source.train_rows, source.mean, source.std, source.class_values,
                          source.class_counts, source.fingerprint)
    assert profiles["label"][0] == 600 and all(p == profiles["label"] for p in profiles.values()), profiles
    assert column_batches(["t.f1"], "public.batch_names", engine.name, ['"label"'])[2] == "c"
    assert column_batches(["t.f1"], "public.batch_names", engine.name, ['"ctq_1"'])[2] == "t"


async def test_an_unchanged_source_is_checked_by_its_fingerprint_alone(conn, dsn, run_cli, tmp_path, monkeypatch):
    """A re-run on an unchanged source takes its profile from the pack of that very content (one
    scan for the content fingerprint instead of the profile), and it is the profile the full check
    gives; a changed row, or another setting the profile follows from (the validation fraction),
    runs the full check again."""
    from dataclasses import replace

    from ctq import packing
    from ctq.config import parse_config
    from ctq.engines import detect

    await create_table(conn, "public.pack_fp", 800, seed=6)
    grid = GRID.format(name="fingerprint", seed=3).replace("pack_src", "pack_fp")
    engine = await detect(conn)

    async def check(text):
        cfg = parse_config(text, source_path="<test>", base_dir=str(tmp_path))
        async with engine.snapshot(dsn) as moment:  # as ctq train checks: in one moment of the source
            return replace(await packing.inspect_source(moment.conn, cfg.data, engine, cfg.seed), profile_seconds=0)

    full = await check(grid)  # (no pack of this source yet)
    proc = run_cli("train", str(write_grid(tmp_path, grid, "fingerprint.yaml")))
    assert proc.returncode == 0, proc.stderr

    async def no_profile(*args, **kwargs):
        raise AssertionError("the full profile ran")

    monkeypatch.setattr(packing, "profile_sql", no_profile)
    assert await check(grid) == full
    with pytest.raises(AssertionError, match="the full profile ran"):
        await check(grid.replace("validation_fraction: 0.25", "validation_fraction: 0.2"))
    await conn.execute("UPDATE public.pack_fp SET f1 = f1 WHERE f2 = (SELECT max(f2) FROM public.pack_fp)")
    with pytest.raises(AssertionError, match="the full profile ran"):
        await check(grid)


async def test_a_train_that_upgrades_ctq_does_not_wait_on_its_own_check(conn, run_cli, tmp_path):
    """The first `ctq train` after ctq itself was upgraded (the server's code is older) checks a
    source already packed, then upgrades the server's code: the check must read nothing of ctq's
    in the transaction it keeps open for the packing, or the upgrade's DDL waits for that
    transaction's lock while ctq waits for the upgrade (the run hung, found by hand)."""
    await create_table(conn, "public.pack_upgrade", 400, seed=8)
    text = GRID.format(name="upgrade", seed=3).replace("pack_src", "pack_upgrade")
    grid = write_grid(tmp_path, text, "upgrade.yaml")
    assert run_cli("train", str(grid)).returncode == 0  # packs the source
    sha = await conn.fetchval("SELECT value FROM ctq.meta WHERE key = 'install_sha'")
    await conn.execute("""UPDATE ctq.meta SET value = '"an older ctq"' WHERE key = 'install_sha'""")
    try:
        proc = run_cli("train", str(grid), timeout=180)
        upgraded = await conn.fetchval("SELECT value FROM ctq.meta WHERE key = 'install_sha'")
    finally:
        await conn.execute("UPDATE ctq.meta SET value = $1 WHERE key = 'install_sha'", sha)  # (upgraded or not)
    assert proc.returncode == 0, proc.stderr
    assert upgraded == sha

"""The SQL each engine gets (rendered templates, no database): the dispatch per engine, the literal
segment filter of targeted queries, Greenplum's distribution clauses, Citus' segment keys."""

from __future__ import annotations

import dataclasses
import re

import pytest

from ctq.engines import ENGINES, CitusEngine, GreenplumEngine, PostgresEngine
from ctq.sql import folders, install_script, render, template

PACK = "0123456789abcdef"
TABLE = '"ctq_data"."pack_0123456789abcdef"'


def test_engine_templates_fall_back_to_common():
    assert template("get_run.sql", "greenplum") == template("get_run.sql")
    assert template("hop.sql", "greenplum") != template("hop.sql", "postgres")
    with pytest.raises(FileNotFoundError):
        template("no_such_statement.sql", "greenplum")


def test_citus_templates_are_what_differs_from_postgres():
    """sql_templates/citus/ inherits sql_templates/postgres/ (its ``inherits`` file), then common/."""
    assert folders("citus") == ("citus", "postgres", "common")
    assert template("pack_select.sql", "citus") == template("pack_select.sql", "postgres")
    assert template("pack_create.sql", "citus") != template("pack_create.sql", "postgres")
    assert template("get_run.sql", "citus") == template("get_run.sql")


def test_a_table_the_engines_share_is_written_once_and_included():
    """What the engines' own statements share comes from one included template (``{{include
    columns/pack.sql}}``): every engine's pack and state tables have its columns, after the
    engine's own distribution key, and no include is left unresolved anywhere."""
    pack = [line.strip() for line in template("columns/pack.sql").splitlines() if not line.startswith("--")]
    for engine in ("postgres", "greenplum", "citus"):
        created = template("pack_create.sql", engine)
        assert "\n".join(pack) in "\n".join(line.strip() for line in created.splitlines()), engine
        assert ("dist_key int NOT NULL," in created) == (engine != "postgres")
        assert "byte_offset int8 NOT NULL," in template("state_tables.sql", engine)
        assert "{{include" not in install_script(engine)


def citus(keys=(8, 1, 31)) -> CitusEngine:
    engine = CitusEngine()
    engine.keys = list(keys)  # (what attach() reads from ctq.citus_segments)
    return engine


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_citus_targeted_queries_carry_the_segment_key_as_a_literal(segment):
    """Every statement of segment k filters the pack and the state tables on k's distribution key,
    a literal (Citus plans it as a router query to that shard's worker), never a bind parameter."""
    key = (8, 1, 31)[segment]
    statements = citus().hop_statements(segment, PACK, TABLE)
    assert f"b.dist_key = {key} AND b.segment IN ({segment}, -1)" not in statements.train  # (order below)
    assert f"b.segment IN ({segment}, -1) AND b.dist_key = {key} AND " in statements.train
    assert statements.train.count(f"s.dist_key = {key} AND s.run_id = $2") == 2
    assert f"b.dist_key = {key} AND " in statements.warmup and f"b.dist_key = {key} AND" in statements.sizes
    for sql in (statements.hop, statements.checkpoint):
        assert f"WHERE b.dist_key = {key} AND b.segment = {segment} AND b.bucket = -1" in sql
    assert "INSERT INTO ctq.hop_states" in statements.hop and "INSERT INTO ctq.model_states" in statements.checkpoint
    assert f"ctq.record_hop($1, $2, $3::int, {segment}, $4::boolean" in statements.record
    for sql in dataclasses.astuple(statements)[:-2]:
        assert not re.search(r"dist_key\s*=\s*\$", sql)
    with pytest.raises(ValueError):
        citus().hop_statements(3, PACK, TABLE)  # more segments than shards
    with pytest.raises(RuntimeError):
        CitusEngine().hop_statements(0, PACK, TABLE)  # keys not read yet


def test_citus_pack_rows_go_to_their_segment_and_validation_to_every_segment():
    from ctq.engines.base import PackSpec

    spec = PackSpec(pack_id=PACK, table=TABLE, source='"public"."t"', is_table=True, x_bytes="x", y_bytes="y",
                    seed=1, validation_cut=100, segments=2, buckets=3, validation_buckets=1)
    sql = citus().pack_select(spec, 0, 2)
    assert "JOIN (VALUES (0, 8), (1, 1)) km(segment, dist_key) ON km.segment = s.segment OR s.segment = -1" in sql
    assert "GROUP BY segment, bucket" in sql and "FROM (SELECT hashtidextended(t.ctid, 1 # t.tableoid::int8) AS key" in sql
    stage = citus().render("pack_stage.sql", stage="s", rows=citus().pack_rows(spec), key_map=citus().key_map(2))
    assert "GROUP BY" not in stage and "ON km.segment = s.segment OR s.segment = -1" in stage


def test_citus_row_keys_tell_apart_the_rows_of_different_shards():
    """ctids repeat across a distributed table's shards: the shard (its oid) is part of the key; both
    are immutable, as Citus requires of what it pushes down."""
    assert citus().row_key("t", 7, True) == "hashtidextended(t.ctid, 7 # t.tableoid::int8)"
    assert "t.tableoid" in citus().row_version("t", True)
    assert citus().row_key("t", 7, False) == PostgresEngine().row_key("t", 7, False)


def test_citus_install_puts_what_workers_read_in_reference_tables():
    sql = install_script("citus")
    assert "create_reference_table(t)" in sql and "ARRAY['ctq.meta', 'ctq.server_code']" in sql
    assert "create_distributed_table('ctq.model_states', 'dist_key'" in sql
    assert "CREATE POLICY own_model_states" not in sql and "FOREACH t IN ARRAY ARRAY[]::text[] LOOP" in sql
    assert "SET citus.allow_nested_distributed_execution = on" in sql
    pg = install_script("postgres")
    assert "citus" not in pg and "ARRAY['models', 'hops', 'epochs', 'decisions'] || ARRAY['model_states']" in pg


@pytest.mark.parametrize("segment", [0, 1, 17])
def test_greenplum_targeted_query_carries_the_segment_as_a_literal(segment):
    """The warm-up, the memory check before it and the hop are calls of functions that build the
    targeted query from the segment (greenplum/hop_functions.sql: the plans are checked on a
    cluster, test_greenplum), so that they run in the session's writer process on the segment,
    where the preload imported Keras (the memory check as a statement of its own ran in a reader
    process of its own, importing Keras again); the segment reaches them as a literal, never a
    bind parameter."""
    statements = GreenplumEngine().hop_statements(segment, PACK, TABLE)
    assert f"ctq.gp_warmup('{PACK}', {segment}, $1::text, 'cached')" in statements.warmup
    assert f"SELECT ctq.gp_model_sizes({segment}, $1::text) AS sizes," in statements.sizes
    for name, checkpoint in (("hop", "false"), ("checkpoint", "true")):
        assert f"ctq.gp_hop($1, $2, $3::int, {segment}, $4::boolean, {checkpoint}, $6::int, $5::text, 'cached',\n" \
            in getattr(statements, name)
    for sql in dataclasses.astuple(statements):
        assert not re.search(r"gp_segment_id\s*=\s*\$", sql)
    with pytest.raises(ValueError):
        GreenplumEngine().hop_statements(segment, "x'); DROP TABLE t; --", TABLE)


@pytest.mark.parametrize("segment", [0, 3])
def test_postgres_targeted_query_reads_its_partition_and_validation(segment):
    sql = PostgresEngine().hop_statements(segment, PACK, TABLE).hop
    assert f"b.segment IN ({segment}, -1)" in sql
    assert f"ctq.record_hop($1, $2, $3::int, {segment}, $4::boolean, h.r," in sql
    assert "GROUP BY" not in sql


def test_pack_id_must_be_hex():
    with pytest.raises(ValueError):
        PostgresEngine().train_query(0, "x'); DROP TABLE t; --", TABLE, "$1")


def test_greenplum_install_replicates_what_segments_read():
    sql = install_script("greenplum")
    for table in ("ctq.meta", "ctq.server_code", "ctq_catalog.packs"):
        body = sql[sql.index(f"CREATE TABLE IF NOT EXISTS {table} "):]
        assert body[:body.index(";")].rstrip().endswith("DISTRIBUTED REPLICATED"), table
    for table in ("ctq_catalog.runs", "ctq_catalog.models", "ctq_catalog.hops", "ctq_catalog.epochs"):
        body = sql[sql.index(f"CREATE TABLE IF NOT EXISTS {table} "):]
        assert body[:body.index(";")].rstrip().endswith("DISTRIBUTED BY (run_id)"), table
    code = re.sub(r"--[^\n]*", "", sql)  # Greenplum 6 is PostgreSQL 9.4
    assert "ADD COLUMN IF NOT EXISTS" not in code and "ON CONFLICT" not in code


def test_postgres_install_has_no_distribution_clauses():
    sql = install_script("postgres")
    assert "DISTRIBUTED" not in sql
    assert "ADD COLUMN IF NOT EXISTS" in sql


def test_row_keys_differ_per_engine():
    pg, gp = PostgresEngine(), GreenplumEngine()
    assert "hashtidextended(t.ctid, 7)" == pg.row_key("t", 7, True)
    assert "gp_segment_id" in gp.row_key("t", 7, True) and "hashtidextended" not in gp.row_key("t", 7, True)
    assert set(ENGINES) == {"postgres", "greenplum", "citus"}


@pytest.mark.parametrize("segment", [0, 2])
def test_scoring_queries_target_one_segment(segment):
    from ctq.engines.base import ScoreSpec
    from ctq.packing import feature_bytes_sql
    from ctq.rules import PackStats

    x_bytes = feature_bytes_sql(["f1", "f 2"], PackStats(input_dim=2, n_outputs=2, mean=[0, 0], std=[1, 1]))
    assert x_bytes == 'float4send(t."f1"::float4) || float4send(t."f 2"::float4)'  # as packing writes a row
    spec = ScoreSpec(source='"public"."t"', is_table=True, id='t."id"', id_type="bigint", x_bytes=x_bytes,
                     y_bytes="NULL::bytea", segments=3, stage='"ctq_data"."score_x"')
    gp = GreenplumEngine().score_query(spec, segment)
    assert f"b.gp_segment_id = {segment}\nGROUP BY b.dist_key, b.gp_segment_id" in gp and '"score_x"' in gp
    pg = PostgresEngine().score_query(spec, segment)
    assert f"((hashtidextended(t.ctid, 0)) & 2147483647) % 3 = {segment}" in pg and x_bytes in pg
    assert "$3::text AS params" in pg  # the header row: the parameters once
    # the model's state: its stored parts (of run $1, model $2), read where they are, not passed in
    assert "ctq.current_state_parts($1, $2)" in pg and "bytea AS state" not in pg  # read in the server, in parts


def test_greenplum_sql_avoids_what_postgresql_9_4_lacks():
    """Every statement Greenplum 6 runs (common templates it does not override, and its own) parses
    on PostgreSQL 9.4: no ON CONFLICT / ADD COLUMN IF NOT EXISTS / 64-bit seeded hashes, and no
    `x ->> 'k' IS NULL` without parentheses (9.4 binds IS tighter than ->>: `x ->> ('k' IS NULL)`)."""
    from ctq.sql import templates_dir

    root = templates_dir()
    names = {p.name for p in (root / "common").iterdir()} | {p.name for p in (root / "greenplum").iterdir()}
    checked = 0
    for name in sorted(n for n in names if n.endswith(".sql")):
        code = re.sub(r"--[^\n]*", "", template(name, "greenplum"))
        assert "ON CONFLICT" not in code and "ADD COLUMN IF NOT EXISTS" not in code, name
        assert "hashtidextended" not in code and "hashtextextended" not in code, name
        assert not re.search(r"->>\s*'[^']*'\s+IS\s", code), name
        checked += 1
    assert checked > 40


def test_greenplum_catalog_writes_go_through_functions_that_check_the_caller():
    """Greenplum 6 has no row-level security: every statement that changes a run or a pack calls a
    SECURITY DEFINER function of greenplum/row_security.sql instead, except deleting runs and packs
    (ctq rm: ctq_admin, through the views; ctq packs gc: a superuser). Each such function pins
    search_path."""
    from ctq.sql import templates_dir

    dml = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"
                     r"(ctq|\{\{catalog\}\})\.(\{\{table\}\}|(runs|models|hops|epochs|decisions|packs)\b)")
    writers = {p.name for p in (templates_dir() / "common").glob("*.sql")
               if "FUNCTION" not in p.read_text() and dml.search(re.sub(r"--[^\n]*", "", p.read_text()))}
    direct = {name for name in writers if dml.search(re.sub(r"--[^\n]*", "", template(name, "greenplum")))}
    assert len(writers) >= 12 and direct == {"remove_runs.sql", "delete_pack.sql"}, (writers, direct)
    sql = install_script("greenplum")
    definers = re.findall(r"CREATE OR REPLACE FUNCTION (ctq\.\w+)\([^$]*?\n(LANGUAGE [^\n]*SECURITY DEFINER[^\n]*)",
                          sql)
    assert len(definers) >= 13
    assert all("SET search_path = pg_catalog, pg_temp" in line for _, line in definers), definers
    # where a function writes what PostgreSQL's statement writes, it runs that statement itself
    # (included: written once), on Greenplum's catalog tables
    for name in ("insert_model", "finish_models", "model_status", "heartbeat", "resume_run", "record_decision"):
        statement = re.sub(r"--[^\n]*\n", "", render(f"{name}.sql", catalog="ctq_catalog")).strip()
        body = sql[sql.index(f"FUNCTION ctq.{name}("):]
        body = body[:body.index("$fn$;")]
        assert statement in re.sub(r"--[^\n]*\n", "", body), name


def test_engine_is_an_interface_that_a_new_engine_implements_whole():
    """A third engine inherits nothing of PostgreSQL's silently: every engine decision is abstract
    in Engine, and an engine without a name and title is refused when it is defined."""
    from ctq.engines.base import Engine

    with pytest.raises(TypeError, match="abstract"):
        type("HalfEngine", (Engine,), {"name": "half", "title": "Half"})()
    with pytest.raises(TypeError, match="must set name and title"):
        type("Nameless", (PostgresEngine,), {"name": ""})
    for cls in ENGINES.values():
        cls()  # (each implements every abstract method)


def test_no_engine_branches_outside_the_engines():
    """Engine differences live in ctq/engines and sql_templates/<engine>: the rest of ctq never asks
    which engine it talks to."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "ctq"
    branch = re.compile(r"CitusEngine|GreenplumEngine|PostgresEngine|==\s*[\"'](greenplum|postgres|citus)[\"']"
                        r"|getattr\((self\.)?engine")
    found = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py") if "engines" not in path.parts
             for n, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert not found, f"engine branches outside ctq/engines: {found}"

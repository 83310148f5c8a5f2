"""Real-world features (issue 9): categorical columns (one-hot, index for an Embedding), image-like
array columns with a feature_shape, ranking metrics for imbalanced labels (AUC, F1...), and the
JSON Schema of grid.yaml. Through the CLI against the real server; Keras trains for real."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import write_grid

REPO = Path(__file__).resolve().parent.parent
COLORS = ["red", "green", "blue", "gold", "grey"]


def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import keras as k

    return k


def save_model(path: Path, *layers, inputs: tuple) -> None:
    k = keras()
    path.write_text(k.Sequential([k.Input(inputs), *layers]).to_json())


async def pack_stats(conn, run_id: int) -> dict:
    return json.loads(await conn.fetchval(
        "SELECT p.stats FROM ctq.packs p JOIN ctq.runs r USING (pack_id) WHERE r.run_id = $1", run_id))


async def count_packs(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM ctq.packs")


@pytest.fixture(scope="module")
async def colors_table(dsn):
    """public.colors: the class is the color (text, with NULLs) for 95% of the rows; x is noise.
    numeric features alone cannot beat the majority share (~0.4)."""
    import asyncpg

    rng = np.random.default_rng(5)
    n = 2400
    color = rng.choice(COLORS + [None], size=n, p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.1])
    label = np.array([{"red": 0, "green": 1, "blue": 2, "gold": 1, "grey": 0, None: 2}[c] for c in color])
    flip = rng.random(n) < 0.05
    label[flip] = rng.integers(0, 3, flip.sum())
    c = await asyncpg.connect(dsn)
    await c.execute("DROP TABLE IF EXISTS public.colors; "
                    "CREATE TABLE public.colors (x float8, color text, code int, label int)")
    await c.copy_records_to_table("colors", schema_name="public", records=[
        (float(rng.normal()), col, int(i % 7), int(lab)) for i, (col, lab) in enumerate(zip(color, label))])
    await c.close()
    return "public.colors"


async def test_a_one_hot_category_carries_the_signal(colors_table, conn, tmp_path, run_cli):
    grid = write_grid(tmp_path, f"""
        data:
          table: {colors_table}
          features: [x, {{column: color, encoding: one_hot}}, {{column: code, encoding: one_hot}}]
          label: label
          task: classification
        segments: 2
        models: [{{name: mlp, layers: [{{dense: 16}}]}}]
        search: {{space: {{learning_rate: [0.05]}}}}
        epochs: 2
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    majority = await conn.fetchval(f"SELECT max(n)::float8 / sum(n) FROM (SELECT count(*) n FROM {colors_table} "
                                   "GROUP BY label) c")
    assert majority < 0.45 and out["best_metric"] > 0.85, (majority, out["best_metric"])
    stats = await pack_stats(conn, out["run_id"])
    # the vocabulary, from the database, in the column's order (NULL is not a value: it is "unknown")
    assert stats["categories"]["color"] == {"encoding": "one_hot", "values": sorted(COLORS)}
    assert stats["categories"]["code"]["values"] == [str(i) for i in range(7)]
    assert stats["input_dim"] == 1 + 5 + 7
    # encoded positions are not normalised; the numeric one is
    assert stats["mean"][1:] == [0.0] * 12 and stats["std"][1:] == [1.0] * 12
    assert abs(stats["mean"][0]) < 0.2 and 0.8 < stats["std"][0] < 1.2
    # ctq predict encodes new rows with the pack's vocabulary: an unseen color and NULL are the
    # unknown value, not an error; the predictions carry the signal
    await conn.execute(f"DROP TABLE IF EXISTS public.colors_new; CREATE TABLE public.colors_new AS "
                       f"SELECT row_number() OVER () AS id, * FROM {colors_table} LIMIT 600")
    await conn.execute("UPDATE public.colors_new SET color = 'violet' WHERE id <= 5")
    run_id = str(out["run_id"])
    proc = run_cli("predict", run_id, "--table", "public.colors_new", "--id-column", "id",
                   "--out", "public.colors_scored", "--replace")
    assert proc.returncode == 0, proc.stderr
    assert "note: column 'color': 5 of 600 rows have a category the model was not trained on" in proc.stderr
    # the same codes as numeric(3,1) ('1.0' is not the category '1'): every row would be scored as
    # the unknown code, a wrong result: refused, naming the column (found by a user trial)
    await conn.execute("DROP TABLE IF EXISTS public.colors_recast; CREATE TABLE public.colors_recast AS "
                       "SELECT id, x, color, code::numeric(3,1) AS code, label FROM public.colors_new")
    for command in (["predict", run_id, "--id-column", "id", "--out", "public.colors_recast_out"],
                    ["evaluate", run_id]):
        refused = run_cli(*command, "--table", "public.colors_recast")
        assert refused.returncode == 2 and "column 'code': none of its 600 values is one of the 7 categories the " \
            "model was trained on ('0', '1', '2', ...; compared as text)" in refused.stderr, refused.stderr
    hits = await conn.fetchval("SELECT avg((s.prediction = c.label)::int) FROM public.colors_scored s "
                               "JOIN public.colors_new c USING (id)")
    assert await conn.fetchval("SELECT count(*) FROM public.colors_scored") == 600 and hits > 0.8, hits
    # a standalone file cannot encode the categories: refused with the reason, nothing written
    proc = run_cli("export", run_id, str(tmp_path / "m.keras"))
    assert proc.returncode == 2 and "categorical" in proc.stderr and not (tmp_path / "m.keras").exists()


async def test_unseen_and_null_categories_encode_as_unknown(conn):
    """feature_bytes_sql, the one expression packing (and prediction) use: a value the vocabulary
    does not have, and NULL, are all zeros (one_hot) and index 0; known values their position."""
    from ctq.packing import feature_bytes_sql
    from ctq.rules import PackStats

    stats = PackStats(input_dim=5, n_outputs=2, mean=[0] * 5, std=[1] * 5,
                      categories={"c": {"encoding": "one_hot", "values": ["a", "b", "it's"]},
                                  "d": {"encoding": "index", "values": ["1", "2", "10"]}})
    sql = feature_bytes_sql(["n", "c", "d"], stats)
    rows = await conn.fetch(f"SELECT {sql} AS x FROM (VALUES (1.5::float8, 'b', 10), (2, 'zzz', 3), "
                            f"(3, NULL, NULL), (4, 'it''s', 1)) t(n, c, d)")
    got = [np.frombuffer(r["x"], ">f4").tolist() for r in rows]
    assert got == [[1.5, 0, 1, 0, 3], [2, 0, 0, 0, 0], [3, 0, 0, 0, 0], [4, 0, 0, 1, 1]]


async def test_too_many_values_for_one_hot_is_refused(conn, tmp_path, run_cli):
    await conn.execute("DROP TABLE IF EXISTS public.zips; CREATE TABLE public.zips AS "
                       "SELECT g::float8 AS x, lpad((g % 150)::text, 5, '0') AS zip, g % 2 AS label "
                       "FROM generate_series(1, 600) g")
    grid = write_grid(tmp_path, """
        data: {table: public.zips, features: [x, {column: zip, encoding: one_hot}], label: label,
               task: classification}
        segments: 2
        models: [{layers: []}]
        epochs: 1
    """)
    before = await count_packs(conn)
    proc = run_cli("train", str(grid), "-q")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "data.features[1]" in line and "'zip'" in line and "150 distinct values" in line, line
    assert "encoding: index" in line
    assert await count_packs(conn) == before


async def test_index_encoding_trains_an_embedding(colors_table, conn, tmp_path, run_cli):
    k = keras()
    save_model(tmp_path / "emb.json", k.layers.Embedding(8, 4), k.layers.Flatten(),
               k.layers.Dense(3, activation="softmax"), inputs=(2,))
    grid = write_grid(tmp_path, f"""
        data:
          table: {colors_table}
          features: [{{column: color, encoding: index}}, {{column: code, encoding: index}}]
          label: label
          task: classification
        segments: 2
        models: [{{name: emb, keras_json: emb.json}}]
        search: {{space: {{learning_rate: [0.05]}}}}
        epochs: 2
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["best_metric"] > 0.85
    stats = await pack_stats(conn, out["run_id"])
    assert stats["categories"]["color"]["encoding"] == "index" and stats["input_dim"] == 2
    assert stats["mean"] == [0.0, 0.0] and stats["std"] == [1.0, 1.0]


def test_models_must_fit_the_encoding_and_the_shape():
    """model_check (run by ctq train once the source is profiled, see test_model_fit.py for the
    refusal through the CLI) against index-encoded features (index_size: the largest vocabulary
    + 1), one-hot or numeric ones, and a feature_shape."""
    from ctq.model_check import _misfit

    k = keras()

    def doc(*layers, inputs):
        return json.loads(k.Sequential([k.Input(inputs), *layers]).to_json())

    def softmax():
        return k.layers.Dense(3, activation="softmax")

    embedding = doc(k.layers.Embedding(50, 4), k.layers.Flatten(), softmax(), inputs=(2,))
    assert _misfit(embedding, (2,), 3, "classification", 8) is None
    assert "no Embedding layer" in _misfit(doc(softmax(), inputs=(2,)), (2,), 3, "classification", 8)
    assert ("has input_dim 50, the features' indices need 51 (the largest vocabulary + 1"
            in _misfit(embedding, (2,), 3, "classification", 51))
    assert "not index-encoded" in _misfit(embedding, (2,), 3, "classification", None)
    image = doc(k.layers.Conv2D(2, 3), k.layers.Flatten(), softmax(), inputs=(6, 6, 1))
    assert _misfit(image, (6, 6, 1), 3, "classification") is None
    assert ("input shape is (36,), the data has rows of shape (6, 6, 1)"
            in _misfit(doc(softmax(), inputs=(36,)), (6, 6, 1), 3, "classification"))


def test_index_encoding_needs_every_feature_indexed_and_keras_json(tmp_path):
    from ctq.config import parse_config
    from ctq.errors import ConfigError

    base = """
        data: {table: t, features: %s, label: y, task: classification}
        models: [%s]
        epochs: 1
    """
    with pytest.raises(ConfigError, match="every feature must be index-encoded"):
        parse_config(base % ("[x, {column: c, encoding: index}]", "{layers: []}"))
    with pytest.raises(ConfigError, match=r"models\[0\].*uses layers:.*keras_json"):
        parse_config(base % ("[{column: c, encoding: index}]", "{layers: []}"))
    with pytest.raises(ConfigError, match=r"encoding: expected one of one_hot, index, got 'onehot'"):
        parse_config(base % ("[{column: c, encoding: onehot}]", "{layers: []}"))


@pytest.fixture(scope="module")
async def bars_table(dsn):
    """public.bars: 6x6 one-channel images as real[], a vertical bar (class 0) or a horizontal bar
    (class 1) at a random place, on noise: a pattern a small CNN learns."""
    import asyncpg

    rng = np.random.default_rng(9)
    records = []
    for i in range(800):
        img = rng.normal(0, 0.3, (6, 6)) + 2.0
        where = rng.integers(0, 6)
        if i % 2:
            img[where, :] += 3
        else:
            img[:, where] += 3
        records.append(([float(v) for v in img.ravel()], i % 2))
    c = await asyncpg.connect(dsn)
    await c.execute("DROP TABLE IF EXISTS public.bars; CREATE TABLE public.bars (pixels real[], label int)")
    await c.copy_records_to_table("bars", schema_name="public", records=records)
    await c.close()
    return "public.bars"


async def test_a_cnn_learns_from_image_arrays(bars_table, conn, tmp_path, run_cli):
    k = keras()
    save_model(tmp_path / "cnn.json", k.layers.Conv2D(4, 3, activation="relu"), k.layers.MaxPooling2D(2),
               k.layers.Flatten(), k.layers.Dense(2, activation="softmax"), inputs=(6, 6, 1))
    grid = write_grid(tmp_path, f"""
        data: {{table: {bars_table}, features: [pixels], feature_shape: [6, 6, 1], label: label,
               task: classification}}
        segments: 2
        models: [{{name: cnn, keras_json: cnn.json}}, {{name: mlp, layers: [{{dense: 8}}]}}]
        search: {{space: {{learning_rate: [0.02], batch_size: [32]}}}}
        epochs: 2
        metric: val_accuracy
    """)
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    cnn = next(r for r in out["leaderboard"] if r["name"].startswith("cnn/"))
    assert cnn["val_metric"] > 0.9, out["leaderboard"]
    stats = await pack_stats(conn, out["run_id"])
    assert stats["feature_shape"] == [6, 6, 1] and stats["input_dim"] == 36
    # one global mean and standard deviation for every pixel (see _array_profile)
    assert len(set(stats["mean"])) == 1 and len(set(stats["std"])) == 1
    assert 2.0 < stats["mean"][0] < 2.6 and stats["std"][0] > 0.5
    # the exported CNN takes the flat array and reshapes it inside; it predicts what ctq predict does
    await conn.execute(f"DROP TABLE IF EXISTS public.bars_new; CREATE TABLE public.bars_new AS "
                       f"SELECT row_number() OVER () AS id, * FROM {bars_table} LIMIT 200")
    args = ("--model", str(cnn["model_id"]))
    proc = run_cli("predict", str(out["run_id"]), *args, "--table", "public.bars_new", "--id-column", "id",
                   "--out", "public.bars_scored", "--replace", "--proba")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", str(out["run_id"]), *args, str(tmp_path / "cnn.keras"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["class_values"] == [0, 1]  # the source's integers, not 0.0 and 1.0
    rows = await conn.fetch("SELECT n.pixels, s.probabilities FROM public.bars_new n "
                            "JOIN public.bars_scored s USING (id) ORDER BY id")
    exported = k.saving.load_model(tmp_path / "cnn.keras")
    x = np.asarray([r["pixels"] for r in rows], np.float32)
    np.testing.assert_allclose(exported.predict(x, verbose=0), np.asarray([r["probabilities"] for r in rows]),
                               rtol=1e-4, atol=1e-5)


async def test_an_array_length_that_does_not_fit_the_shape_is_refused(bars_table, conn, tmp_path, run_cli):
    grid = write_grid(tmp_path, f"""
        data: {{table: {bars_table}, features: [pixels], feature_shape: [6, 6, 2], label: label,
               task: classification}}
        segments: 2
        models: [{{layers: []}}]
        epochs: 1
    """)
    before = await count_packs(conn)
    proc = run_cli("train", str(grid), "-q")
    assert proc.returncode == 2, proc.stderr
    assert ("data.feature_shape: array column 'pixels' has 36 values per row, but feature_shape [6, 6, 2] "
            "holds 72") in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert await count_packs(conn) == before


async def test_val_auc_ranks_models_on_an_imbalanced_label(conn, tmp_path, run_cli):
    """5% positives: a model that barely moves from its constant start (lr 1e-6) sits at the
    majority share on accuracy like one that learned; AUC (max is best) tells them apart."""
    rng = np.random.default_rng(4)
    x = rng.random((3000, 2)) * [2, 1]
    label = x[:, 0] + 0.5 * rng.random(3000) > 2.2
    await conn.execute("DROP TABLE IF EXISTS public.rare; CREATE TABLE public.rare (x1 float8, x2 float8, label bool)")
    await conn.copy_records_to_table("rare", schema_name="public",
                                     records=[(float(a), float(b), bool(c)) for (a, b), c in zip(x, label)])
    assert 0.02 < label.mean() < 0.1
    k = keras()
    save_model(tmp_path / "zero.json", k.layers.Dense(2, activation="softmax", kernel_initializer="zeros"),
               inputs=(2,))
    grid = write_grid(tmp_path, """
        data: {table: public.rare, features: [x1, x2], label: label, task: classification}
        segments: 2
        models: [{name: lin, keras_json: zero.json}]
        search: {space: {optimizer: [sgd], learning_rate: [0.000001, 0.5]}}
        epochs: 2
        metric: val_auc
    """)
    proc = run_cli("train", str(grid), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    board = {r["name"]: r for r in out["leaderboard"]}
    assert out["best_model"] == "lin/sgd/lr=0.5/bs=64", board
    assert out["best_metric"] > 0.9 and board["lin/sgd/lr=1e-06/bs=64"]["score"] < 0.6, board
    assert await conn.fetchval("SELECT metric_mode FROM ctq.runs WHERE run_id = $1", out["run_id"]) == "max"
    # ctq evaluate reports the run's metric too: AUC over every row from the segments' counts, as
    # Keras computes it on all rows at once with the exported model
    run_id = str(out["run_id"])
    proc = run_cli("evaluate", run_id, "--table", "public.rare", "--json")
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(proc.stdout)
    assert run_cli("export", run_id, str(tmp_path / "lin.keras")).returncode == 0
    from ctq.indb import make_metric

    probabilities = k.saving.load_model(tmp_path / "lin.keras").predict(x.astype(np.float32), verbose=0)
    auc = make_metric("classification", "auc", 2)
    auc.update_state(label.astype(np.int32), probabilities)
    assert abs(evaluated["auc"] - float(auc.result())) < 1e-6, (evaluated, float(auc.result()))
    assert evaluated["auc"] > 0.9 and 0.9 < evaluated["accuracy"] <= 1
    plain = run_cli("evaluate", run_id, "--table", "public.rare")  # the line says it too (a user trial)
    assert plain.returncode == 0 and f"auc {evaluated['auc']:.4f}" in plain.stdout, plain.stdout


@pytest.mark.parametrize("classes", [2, 3])
def test_ranking_metrics_are_keras_metrics_on_class_indices(classes):
    """indb.make_metric against the definitions: AUC one-vs-rest (macro), and precision, recall,
    F1 of class 1 (binary) or macro-averaged, for the most probable class."""
    from ctq import indb

    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 500)
    p = rng.random((500, classes)) + np.eye(classes)[y] * 0.6
    p /= p.sum(1, keepdims=True)
    pred = p.argmax(1)

    def auc(score, positive):
        ranks = np.empty(len(score))
        ranks[np.argsort(score)] = np.arange(1, len(score) + 1)
        n1 = positive.sum()
        return (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(score) - n1))

    precision = np.array([((pred == c) & (y == c)).sum() / (pred == c).sum() for c in range(classes)])
    recall = np.array([((pred == c) & (y == c)).sum() / (y == c).sum() for c in range(classes)])
    f1 = 2 * precision * recall / (precision + recall)
    pick = (lambda v: v[1]) if classes == 2 else np.mean
    expected = {"auc": np.mean([auc(p[:, c], y == c) for c in range(classes)]), "precision": pick(precision),
                "recall": pick(recall), "f1": pick(f1)}
    from ctq.rules import PackStats

    stats = PackStats(input_dim=1, n_outputs=classes, mean=[0], std=[1])
    for name, value in expected.items():
        metric = indb.make_metric("classification", name, classes)
        metric.update_state(y.astype(np.int32), p.astype(np.float32))
        assert abs(float(metric.result()) - value) < (5e-3 if name == "auc" else 1e-5), name
        # as ctq evaluate computes it: each segment's counts, summed (F1's counts are built lazily
        # by Keras: the sum had nowhere to go, a traceback found by a user trial)
        states = [indb.ranking_metric_state("classification", name, stats, y[part].astype(np.int32), p[part])
                  for part in (slice(0, 200), slice(200, None))]
        summed = indb.ranking_metric_result("classification", name, stats, states)
        assert abs(summed - float(metric.result())) < 1e-6, name


# -- the JSON Schema of grid.yaml -----------------------------------------------------------------


def test_schema_keys_are_the_validators_models():
    from ctq import config as c
    from ctq.schema import grid_schema, keys

    schema = grid_schema()
    assert schema["$schema"].endswith("2020-12/schema") and schema["required"] == ["data", "models"]
    assert {"required": ["epochs"]} in schema["anyOf"]  # or ASHA's search.max_epochs
    sections: dict[str, list[str]] = {}
    for prefix, key, _ in keys():
        sections.setdefault(prefix, []).append(key)
    assert sections[""] == list(c.Grid.model_fields)
    assert sections["data."] == list(c.Data.model_fields)
    assert sections["data.features[]."] == list(c.Categorical.model_fields)
    assert sections["models[]."] == list(c.ArchitectureEntry.model_fields)
    assert sections["models[].layers[]."] == [k for cls in (c.Dense, c.Dropout, c.BatchNorm) for k in cls.model_fields]
    assert sections["search."] == list(c.Search.model_fields)
    assert sections["search.space."] == list(c.SPACE_KEYS) == list(c.Space.model_fields)
    assert sections["search.space.learning_rate."] == ["low", "high", "log"]
    metric = dict((k, v) for p, k, v in keys() if p == "")["metric"]
    assert metric["enum"] == list(c.METRICS)


def _valid_grids(tmp_path) -> list[tuple[str, dict]]:
    """Every grid in examples/, the documented example of ctq/config.py, and valid grids of the tests."""
    import ctq.config

    grids = [(str(p), yaml.safe_load(p.read_text())) for p in sorted((REPO / "examples").glob("*.yaml"))]
    block = ctq.config.__doc__.split(".. code-block:: yaml\n")[1].split("\nLayer shorthand")[0]
    grids.append(("ctq/config.py", yaml.safe_load("\n".join(line[4:] for line in block.splitlines()))))
    from test_config import base_config

    grids.append(("test_config.base_config", base_config()))
    for text in [
        "data: {table: t, features: [x, {column: c, encoding: one_hot}], label: y, task: classification}\n"
        "models: [{layers: [{dense: 8, activation: tanh, l2: 0.001}, {dropout: 0.1}, {batch_norm: true}]}]\n"
        "search: {method: random, samples: 3, space: {learning_rate: {low: 0.0001, high: 0.1, log: true}}}\n"
        "epochs: 1\nmetric: val_f1\n",
        "data: {table: s.t, features: [px], feature_shape: [28, 28, 1], label: y, task: regression,\n"
        "       validation_fraction: null}\nmodels: [{keras_json: m.json}]\nepochs: 2\nmetric: mae\nsegments: 4\n",
    ]:
        grids.append((text, yaml.safe_load(text)))
    return grids


def test_valid_grids_validate_against_the_schema(tmp_path, run_cli):
    import jsonschema

    proc = run_cli("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for where, doc in _valid_grids(tmp_path):
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, (where, errors)


def test_example_grids_are_valid():
    from ctq.config import load_config

    for path in sorted((REPO / "examples").glob("*.yaml")):
        assert load_config(path).models, path


@pytest.mark.parametrize("mutation", [
    lambda d: d.update(epoch=3),                                     # unknown key (did you mean epochs)
    lambda d: d["data"].update(task="clasification"),                # not an enum value
    lambda d: d["data"]["features"].append({"column": "c", "encoding": "onehot"}),
    lambda d: d["models"][0].update(keras_json="m.json"),            # layers and keras_json
    lambda d: d["models"][0]["layers"].append({"dense": 0}),
    lambda d: d.update(metric="val_auroc"),
    lambda d: d.pop("epochs"),
])
def test_invalid_grids_fail_both_the_schema_and_the_validator(mutation):
    import jsonschema

    from ctq.config import parse_config
    from ctq.errors import ConfigError
    from ctq.schema import grid_schema

    doc = {"data": {"table": "t", "features": ["x"], "label": "y", "task": "classification"},
           "models": [{"layers": [{"dense": 4}]}], "epochs": 1}
    mutation(doc)
    assert list(jsonschema.Draft202012Validator(grid_schema()).iter_errors(doc))
    with pytest.raises(ConfigError):
        parse_config(yaml.safe_dump(doc))

"""Tests for ctq.config: loading, validation and expansion of grid.yaml (pure Python, no database)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from ctq.config import (
    MAX_MODELS,
    Architecture,
    RunConfig,
    fingerprint,
    load_config,
    parse_config,
    parse_table_name,
)
from ctq.errors import ConfigError
from ctq.rules import Hyperparameters, ModelSpec

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# Fixtures: a valid base configuration and hand-made Keras JSON documents
# --------------------------------------------------------------------------------------------

_DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def _dense(name: str, units: int, activation: str) -> dict:
    return {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": name, "trainable": True, "dtype": _DTYPE, "units": units, "activation": activation,
            "use_bias": True,
            "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                   "config": {"seed": None}, "registered_name": None},
            "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                                 "registered_name": None},
            "kernel_regularizer": None, "bias_regularizer": None,
            "kernel_constraint": None, "bias_constraint": None,
        },
        "registered_name": None,
    }


def sequential_json(*extra_layers: dict) -> dict:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {"module": "keras.layers", "class_name": "InputLayer",
                 "config": {"batch_shape": [None, 3], "dtype": "float32", "sparse": False, "name": "input_layer"},
                 "registered_name": None},
                _dense("dense", 4, "relu"),
                *extra_layers,
            ],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 3]},
    }


def functional_json(inner_layer: dict) -> dict:
    """A Functional model whose second layer is a nested Sequential containing ``inner_layer``."""
    inner = sequential_json(inner_layer)
    inner["name"] = "sequential"
    inner["inbound_nodes"] = [{"args": [{"class_name": "__keras_tensor__",
                                         "config": {"shape": [None, 3], "dtype": "float32",
                                                    "keras_history": ["input_layer", 0, 0]}}],
                               "kwargs": {}}]
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": "functional",
            "trainable": True,
            "layers": [
                {"module": "keras.layers", "class_name": "InputLayer",
                 "config": {"batch_shape": [None, 3], "dtype": "float32", "sparse": False, "name": "input_layer"},
                 "registered_name": None, "name": "input_layer", "inbound_nodes": []},
                inner,
            ],
            "input_layers": ["input_layer", 0, 0],
            "output_layers": ["sequential", 0, 0],
        },
        "registered_name": "Functional",
    }


LAMBDA_LAYER = {
    "module": "keras.layers",
    "class_name": "Lambda",
    "config": {"name": "lambda", "function": {"class_name": "__lambda__",
                                              "config": {"code": "4wEAAAAA", "defaults": None, "closure": None}},
               "arguments": {}},
    "registered_name": None,
}

KERAS_FILES = {
    "good.json": sequential_json(),
    "functional_ok.json": functional_json(_dense("dense_2", 2, "linear")),
    "bad.json": "{not json",
    "not_model.json": {"class_name": "Dense", "config": {"units": 3}},
    "list.json": [1, 2, 3],
    "lambda.json": sequential_json(LAMBDA_LAYER),
    "nested_lambda.json": functional_json(LAMBDA_LAYER),
    "lambda_keras2.json": sequential_json({"class_name": "Custom", "config": {
        "function": ["YWJj", None, None], "function_type": "lambda"}}),
    "builtins.json": sequential_json({"module": "builtins", "class_name": "function",
                                      "config": "print", "registered_name": "function"}),
    "os_system.json": sequential_json({**_dense("dense_9", 2, "relu"),
                                       "config": {**_dense("x", 2, "relu")["config"], "activation": "os.system"}}),
    "eval.json": sequential_json({**_dense("dense_9", 2, "relu"),
                                  "config": {**_dense("x", 2, "relu")["config"], "activation": "eval"}}),
}


def base_config() -> dict:
    return {
        "name": "demo",
        "data": {
            "table": "public.my_table",
            "features": ["f1", "f2", "f3"],
            "label": "target",
            "task": "classification",
            "validation_fraction": 0.2,
        },
        "models": [
            {"name": "mlp-small", "layers": [
                {"dense": 64, "activation": "relu"},
                {"dropout": 0.1},
                {"dense": 32, "activation": "relu", "l2": 0.0001},
                {"batch_norm": True},
            ]},
            {"name": "custom", "keras_json": "models/good.json"},
        ],
        "search": {
            "method": "grid",
            "seed": 7,
            "space": {"optimizer": ["adam", "sgd"], "learning_rate": [0.001, 0.01], "batch_size": [64, 256]},
        },
        "epochs": 5,
        "metric": "val_accuracy",
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    for name, content in KERAS_FILES.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (models / name).write_text(text)
    return tmp_path


def write(workdir: Path, doc, name: str = "grid.yaml") -> Path:
    path = workdir / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def load(workdir: Path, doc) -> RunConfig:
    return load_config(write(workdir, doc))


# --------------------------------------------------------------------------------------------
# Malformed configurations
# --------------------------------------------------------------------------------------------


def _set(path: str, value):
    """Mutation setting ``a.b[1].c`` to value (``DELETE`` removes the key)."""

    def mutate(doc):
        node = doc
        tokens = path.replace("]", "").replace("[", ".").split(".")
        for tok in tokens[:-1]:
            node = node[int(tok)] if isinstance(node, list) else node[tok]
        last = tokens[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return doc

    return mutate


def _with(*mutations):
    def mutate(doc):
        for m in mutations:
            doc = m(doc)
        return doc

    return mutate


def _text(text: str):
    return lambda _doc: text


DELETE = object()

BAD_CASES = [
    # (id, mutation, substrings expected in the message)
    ("bad-yaml", _text("data: [1, 2\nepochs: 3\n"), ["grid.yaml", "invalid YAML", "line"]),
    ("bad-yaml-indent", _text("data:\n  table: t\n features: [a]\n"), ["invalid YAML", "line 3"]),
    ("duplicate-yaml-key", _text("epochs: 1\nepochs: 2\n"), ["duplicate key 'epochs'", "line 2"]),
    ("not-a-mapping", _text("- a\n- b\n"), ["grid.yaml", "expected a mapping", "a list"]),
    ("empty-file", _text(""), ["grid.yaml", "empty"]),
    ("unknown-top-level", _set("epoch", 3), ["unknown key 'epoch'", "did you mean 'epochs'?"]),
    ("unknown-nested", _set("data.tabel", "x"), ["data.tabel", "did you mean 'table'?"]),
    ("unknown-search-key", _set("search.sample", 3), ["search.sample", "did you mean 'samples'?"]),
    ("missing-table", _set("data.table", DELETE), ["data.table", "missing"]),
    ("missing-data", _set("data", DELETE), ["data", "missing"]),
    ("missing-epochs", _set("epochs", DELETE), ["epochs", "missing"]),
    ("features-empty", _set("data.features", []), ["data.features", "non-empty list"]),
    ("features-not-list", _set("data.features", "f1"), ["data.features", "non-empty list", "[name]"]),
    ("features-non-string", _set("data.features", ["f1", 3]), ["data.features[1]", "column name"]),
    ("features-duplicate", _set("data.features", ["f1", "f1"]), ["data.features[1]", "duplicate"]),
    ("exclude-without-all", _set("data.exclude", ["f1"]), ["data.exclude", "only with data.features: all"]),
    ("exclude-not-list", _with(_set("data.features", "all"), _set("data.exclude", "id")),
     ["data.exclude", "list of column names"]),
    ("features-all-with-shape", _with(_set("data.features", "all"), _set("data.feature_shape", [2, 2])),
     ["data.feature_shape", "exactly one feature"]),
    ("label-in-features", _set("data.label", "f2"), ["data.label", "also listed"]),
    ("identifier-nul", _set("data.label", "tar\x00get"), ["data.label", "control character"]),
    ("table-nul", _set("data.table", "my\x00table"), ["data.table", "control character"]),
    ("table-three-parts", _set("data.table", "db.s.t"), ["data.table", "two dotted parts"]),
    ("table-unterminated", _set("data.table", '"abc'), ["data.table", "unterminated"]),
    ("table-empty-part", _set("data.table", "s."), ["data.table", "empty name part"]),
    ("wrong-task", _set("data.task", "classifcation"), ["data.task", "did you mean 'classification'?"]),
    ("vf-zero-val-metric", _set("data.validation_fraction", 0), ["data.validation_fraction", "val_accuracy"]),
    ("vf-too-big", _set("data.validation_fraction", 1.5), ["data.validation_fraction", "[0, 1)", "1.5"]),
    ("vf-string", _set("data.validation_fraction", "0.2"), ["data.validation_fraction", "'0.2'"]),
    ("buffer-rows-zero", _set("data.buffer_rows", 0), ["data.buffer_rows", "positive integer"]),
    ("epochs-negative", _set("epochs", -1), ["epochs", "positive integer", "-1"]),
    ("epochs-bool", _set("epochs", True), ["epochs", "positive integer", "true"]),
    ("epochs-float", _set("epochs", 2.5), ["epochs", "positive integer"]),
    ("segments-zero", _set("segments", 0), ["segments", "positive integer"]),
    ("segments-too-many", _set("segments", 257), ["segments", "at most 256"]),
    ("cores-string", _set("cores_per_segment", "two"), ["cores_per_segment", "'two'"]),
    ("name-empty", _set("name", ""), ["name", "non-empty string"]),
    ("models-empty", _set("models", []), ["models", "non-empty list"]),
    ("models-mapping", _set("models", {"a": 1}), ["models", "non-empty list"]),
    ("model-both", _set("models[0].keras_json", "models/good.json"), ["models[0]", "exactly one", "both"]),
    ("model-neither", _set("models[0].layers", DELETE), ["models[0]", "exactly one", "neither"]),
    ("model-unknown-key", _set("models[1].keras", "x"), ["models[1].keras", "did you mean 'keras_json'?"]),
    ("duplicate-names", _set("models[1].name", "mlp-small"), ["models[1].name", "duplicate", "mlp-small"]),
    ("layers-not-list", _set("models[0].layers", {"dense": 3}), ["models[0].layers", "list of layers"]),
    ("layer-unknown-kind", _set("models[0].layers[1]", {"conv": 3}), ["models[0].layers[1].conv", "unknown layer kind"]),
    ("layer-typo-kind", _set("models[0].layers[1]", {"dens": 3}), ["models[0].layers[1].dens", "did you mean 'dense'?"]),
    ("layer-two-kinds", _set("models[0].layers[0]", {"dense": 3, "dropout": 0.1}), ["models[0].layers[0]", "exactly one kind"]),
    ("layer-units-string", _set("models[0].layers[0].dense", "abc"),
     ["models[0].layers[0].dense", "expected a positive integer, got 'abc'"]),
    ("layer-units-zero", _set("models[0].layers[0].dense", 0), ["models[0].layers[0].dense", "positive integer"]),
    ("layer-units-bool", _set("models[0].layers[0].dense", True), ["models[0].layers[0].dense", "positive integer"]),
    ("layer-activation", _set("models[0].layers[0].activation", "rellu"),
     ["models[0].layers[0].activation", "did you mean 'relu'?"]),
    ("layer-unknown-option", _set("models[0].layers[0].units", 3), ["models[0].layers[0].units", "unknown key"]),
    ("layer-l2-negative", _set("models[0].layers[2].l2", -0.1), ["models[0].layers[2].l2", ">= 0"]),
    ("dropout-one", _set("models[0].layers[1].dropout", 1.0), ["models[0].layers[1].dropout", "[0, 1)"]),
    ("dropout-negative", _set("models[0].layers[1].dropout", -0.2), ["models[0].layers[1].dropout", "[0, 1)"]),
    ("batch-norm-false", _set("models[0].layers[3].batch_norm", False), ["models[0].layers[3].batch_norm", "expected true"]),
    ("layer-not-mapping", _set("models[0].layers[0]", "dense"), ["models[0].layers[0]", "layer mapping"]),
    # keys spelt like the union tags ("#0") the messages follow through pydantic's error locations
    ("key-like-a-tag", _set("models[0].#1", 3), ["models[0].#1: unknown key '#1'"]),
    ("layer-key-like-a-tag", _set("models[0].layers[0].#0", 3), ["models[0].layers[0].#0: unknown key '#0'"]),
    ("empty-grid", _set("search.space.batch_size", []), ["search.space.batch_size", "empty grid"]),
    ("unknown-space-key", _set("search.space.lr", [0.1]), ["search.space.lr", "unknown key"]),
    ("unknown-optimizer", _set("search.space.optimizer", ["adam", "adamm"]),
     ["search.space.optimizer[1]", "'adamm'", "did you mean 'adam'?"]),
    ("optimizer-range", _with(_set("search.method", "random"), _set("search.samples", 3),
                              _set("search.space.optimizer", {"low": 1, "high": 2})),
     ["search.space.optimizer", "optimizer name"]),
    ("lr-zero", _set("search.space.learning_rate", [0.0]), ["search.space.learning_rate[0]", "> 0"]),
    ("lr-nan", _set("search.space.learning_rate", float("nan")), ["search.space.learning_rate", "learning rate"]),
    ("batch-size-float", _set("search.space.batch_size", [64, 12.5]), ["search.space.batch_size[1]", "positive integer"]),
    ("duplicate-grid-value", _set("search.space.batch_size", [64, 64]), ["search.space.batch_size[1]", "duplicate"]),
    ("momentum-without-user", _with(_set("search.space.optimizer", ["adam", "adamw"]),
                                    _set("search.space.momentum", [0.9])),
     ["search.space.momentum", "sgd and rmsprop"]),
    ("momentum-one", _with(_set("search.space.optimizer", "sgd"), _set("search.space.momentum", 1.0)),
     ["search.space.momentum", "[0, 1)"]),
    ("random-without-samples", _set("search.method", "random"), ["search.samples", "required"]),
    ("grid-with-samples", _set("search.samples", 5), ["search.samples", "only used with search.method: random"]),
    ("bad-method", _set("search.method", "bayes"), ["search.method", "grid, random"]),
    ("negative-seed", _set("search.seed", -1), ["search.seed", "non-negative integer"]),
    ("asha-without-max-epochs", _with(_set("search.method", "asha"), _set("epochs", DELETE)),
     ["search.max_epochs", "required with search.method: asha"]),
    ("asha-with-epochs", _with(_set("search.method", "asha"), _set("search.max_epochs", 9)),
     ["grid.yaml:epochs", "up to search.max_epochs; remove epochs"]),
    ("asha-grace-over-max", _with(_set("search.method", "asha"), _set("epochs", DELETE),
                                  _set("search.max_epochs", 3), _set("search.grace_period", 4)),
     ["search.grace_period", "not below search.max_epochs (3)"]),
    ("asha-grace-at-max", _with(_set("search.method", "asha"), _set("epochs", DELETE),
                                _set("search.max_epochs", 3), _set("search.grace_period", 3)),
     ["search.grace_period", "no rung to decide at"]),
    ("asha-one-epoch", _with(_set("search.method", "asha"), _set("epochs", DELETE), _set("search.max_epochs", 1)),
     ["search.grace_period", "1 is not below search.max_epochs (1)"]),
    ("asha-reduction-one", _with(_set("search.method", "asha"), _set("epochs", DELETE),
                                 _set("search.max_epochs", 3), _set("search.reduction_factor", 1)),
     ["search.reduction_factor", "an integer >= 2, got 1"]),
    ("grace-with-grid", _set("search.grace_period", 1), ["search.grace_period", "only used with search.method: asha"]),
    ("grid-without-epochs", _set("epochs", DELETE), ["grid.yaml:epochs", "required key is missing"]),
    ("bad-scheduling", _set("scheduling", "lrpt"), ["scheduling", "expected one of cost, random, got 'lrpt'"]),
    ("typo-scheduling", _set("scheduling", "randm"), ["scheduling", "did you mean 'random'?"]),
    ("random-low-gt-high", _with(_set("search.method", "random"), _set("search.samples", 4),
                                 _set("search.space.learning_rate", {"low": 0.1, "high": 0.01})),
     ["search.space.learning_rate", "greater than high"]),
    ("random-range-missing-high", _with(_set("search.method", "random"), _set("search.samples", 4),
                                        _set("search.space.learning_rate", {"low": 0.1})),
     ["search.space.learning_rate.high", "missing"]),
    ("random-range-log-not-bool", _with(_set("search.method", "random"), _set("search.samples", 4),
                                        _set("search.space.learning_rate", {"low": 0.01, "high": 0.1, "log": "yes!"})),
     ["search.space.learning_rate.log", "true or false"]),
    ("random-range-unknown-key", _with(_set("search.method", "random"), _set("search.samples", 4),
                                       _set("search.space.batch_size", {"low": 8, "hihg": 64})),
     ["search.space.batch_size.hihg", "did you mean 'high'?"]),
    ("random-batch-range-float", _with(_set("search.method", "random"), _set("search.samples", 4),
                                       _set("search.space.batch_size", {"low": 8, "high": 64.5})),
     ["search.space.batch_size.high", "positive integer"]),
    ("range-with-grid", _set("search.space.learning_rate", {"low": 0.001, "high": 0.1}),
     ["search.space.learning_rate", "method: random"]),
    ("too-many-samples", _with(_set("search.method", "random"), _set("search.samples", MAX_MODELS + 1)),
     ["search.samples", str(MAX_MODELS)]),
    ("grid-too-large", _set("search.space.batch_size", list(range(1, 3000))), ["search.space", "limit is 10000"]),
    # issue 21: TPE asked a finite space more times than it has configurations: repeats, silently
    ("tpe-samples-over-space", _with(_set("search.method", "tpe"), _set("search.samples", 5000)),
     ["search.samples", "5000 models, but search.space has only", "distinct configurations", "would repeat one"]),
    ("tpe-samples-over-integer-range", _with(_set("search.method", "tpe"), _set("search.samples", 5000),
                                             _set("search.space.batch_size", {"low": 8, "high": 10})),
     ["search.samples", "distinct configurations", "use samples:"]),
    ("accuracy-with-regression", _set("data.task", "regression"), ["metric", "val_accuracy", "classification"]),
    ("mae-with-classification", _set("metric", "mae"), ["metric", "regression"]),
    ("unknown-metric", _set("metric", "val_acc"), ["metric", "did you mean 'val_accuracy'?"]),
    ("keras-json-missing", _set("models[1].keras_json", "models/nope.json"),
     ["models[1].keras_json", "file not found", "nope.json"]),
    ("keras-json-directory", _set("models[1].keras_json", "models"), ["models[1].keras_json", "directory"]),
    ("keras-json-invalid", _set("models[1].keras_json", "models/bad.json"), ["models[1].keras_json", "invalid JSON"]),
    ("keras-json-not-model", _set("models[1].keras_json", "models/not_model.json"),
     ["models[1].keras_json", "not a Keras model config", "'Dense'"]),
    ("keras-json-list", _set("models[1].keras_json", "models/list.json"), ["models[1].keras_json", "not a Keras model"]),
    ("keras-json-not-string", _set("models[1].keras_json", 3), ["models[1].keras_json", "path"]),
    ("keras-json-lambda", _set("models[1].keras_json", "models/lambda.json"),
     ["models[1].keras_json", "refused", "Python code", "Lambda"]),
    ("keras-json-nested-lambda", _set("models[1].keras_json", "models/nested_lambda.json"),
     ["models[1].keras_json", "refused", "Python code", "config.layers[1].config.layers[2]"]),
    ("keras-json-lambda-keras2", _set("models[1].keras_json", "models/lambda_keras2.json"),
     ["models[1].keras_json", "Python code", "function_type"]),
    ("keras-json-builtins", _set("models[1].keras_json", "models/builtins.json"),
     ["models[1].keras_json", "Python code", "builtins"]),
    ("keras-json-os-system", _set("models[1].keras_json", "models/os_system.json"),
     ["models[1].keras_json", "Python code", "os.system"]),
    ("keras-json-eval", _set("models[1].keras_json", "models/eval.json"), ["models[1].keras_json", "Python code", "eval"]),
    # integers the catalog keeps in integer columns: past 2^31 - 1 a run was created, then refused
    # by the server ('the data could not be used'), and left stale (a user trial)
    ("run-name-blank", _set("name", "  "), ["grid.yaml:name: is blank"]),
    ("run-name-too-long", _set("name", "n" * 201), ["name: is 201 characters long; at most 200"]),
    ("model-name-with-slash", _set("models[0].name", "m/adam"), ["models[0].name: contains '/'"]),
    ("memory-budget-past-int", _set("memory_budget_mb", 30000000000),
     ["memory_budget_mb: must be at most 2147483647, got 30000000000"]),
    ("seed-past-int", _set("search.seed", 2**31), ["search.seed: must be at most 2147483647"]),
    ("epochs-past-int", _set("epochs", 3000000000), ["epochs: must be at most 2147483647"]),
    ("warm-start-past-bigint", _set("warm_start", 2**63), ["warm_start: must be at most 9223372036854775807"]),
    ("retries-negative", _set("retries", -1), ["retries: expected a non-negative integer, got -1"]),
    ("retries-beyond-the-limit", _set("retries", 101), ["retries: must be at most 100, got 101"]),
    ("retries-not-a-number", _set("retries", "often"), ["retries:"]),
]
# search.method hyperband takes asha's keys under the same rules and messages (its method named in them)
BAD_CASES += [(name.replace("asha", "hyperband"), _with(mutation, _set("search.method", "hyperband")),
               [part.replace("method: asha", "method: hyperband") for part in expected])
              for name, mutation, expected in BAD_CASES if name.startswith("asha-")]


@pytest.mark.parametrize("mutation, expected", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_malformed_config(workdir, mutation, expected):
    doc = mutation(base_config())
    with pytest.raises(ConfigError) as info:
        load(workdir, doc)
    err = info.value
    assert err.exit_code == 2
    message = str(err)
    assert message.startswith(str(workdir / "grid.yaml")), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_each_malformed_case_mutates_a_valid_config(workdir):
    """The cases are only errors because of their mutation: the base they mutate loads cleanly,
    and every mutation really changes it."""
    assert load(workdir, base_config()).name == "demo"
    for case_id, mutation, _ in BAD_CASES:
        assert mutation(base_config()) != base_config(), case_id


def test_file_not_found(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert info.value.exit_code == 2
    assert "absent.yaml" in str(info.value) and "not found" in str(info.value)


def test_yaml_error_reports_line_and_column():
    with pytest.raises(ConfigError) as info:
        parse_config("epochs: 3\ndata: {table: t\nmodels: []\n", source_path="grid.yaml")
    msg = str(info.value)
    assert msg.startswith("grid.yaml")
    assert "line" in msg and "column" in msg


def test_error_carries_path_and_key(workdir):
    doc = _set("models[1].layers", [{"dense": "abc"}])(_set("models[1].keras_json", DELETE)(base_config()))
    with pytest.raises(ConfigError) as info:
        load(workdir, doc)
    err = info.value
    assert err.key == "models[1].layers[0].dense"
    assert err.path == str(workdir / "grid.yaml")
    assert str(err).endswith("models[1].layers[0].dense: expected a positive integer, got 'abc'")


def test_unknown_key_without_close_match_lists_allowed(workdir):
    doc = base_config()
    doc["zzzz"] = 1
    with pytest.raises(ConfigError, match="allowed: name, data"):
        load(workdir, doc)


# --------------------------------------------------------------------------------------------
# Valid configurations
# --------------------------------------------------------------------------------------------


def test_grid_expansion_count_order_and_ids(workdir):
    cfg = load(workdir, base_config())
    assert cfg.search_method == "grid"
    assert len(cfg.models) == 2 * 2 * 2 * 2
    assert [m.model_id for m in cfg.models] == list(range(1, 17))
    assert len({m.name for m in cfg.models}) == 16
    first = cfg.models[0]
    assert first.name == "mlp-small/adam/lr=0.001/bs=64"
    assert (first.optimizer, first.learning_rate, first.batch_size, first.momentum) == ("adam", 0.001, 64, None)
    # architectures in file order, then optimizer, learning_rate, batch_size (last varies fastest)
    order = [(m.architecture.name, m.optimizer, m.learning_rate, m.batch_size) for m in cfg.models]
    expected = [(a, o, lr, bs) for a in ("mlp-small", "custom") for o in ("adam", "sgd")
                for lr in (0.001, 0.01) for bs in (64, 256)]
    assert order == expected
    assert cfg.models[8].architecture is cfg.architectures[1]
    assert cfg.models[0].hyperparameters().as_dict() == {"optimizer": "adam", "learning_rate": 0.001,
                                                         "batch_size": 64, "momentum": None}
    json.dumps(cfg.models[0].hyperparameters().as_dict())
    seeds = [m.seed for m in cfg.models]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [m.seed for m in load(workdir, base_config()).models]
    # as the catalog stores them and both sides read them back (ctq.rules.ModelSpec): the models
    # that differ only in their learning rate share compiled steps, a batch size does not
    specs = [ModelSpec.from_row({"name": m.name, "architecture": json.dumps(m.architecture.spec),
                                 "hyperparameters": json.dumps(m.hyperparameters().as_dict()), "seed": m.seed})
             for m in cfg.models]
    assert [s.hyperparameters for s in specs] == [m.hyperparameters() for m in cfg.models]
    assert len({s.step_key() for s in specs}) == 2 * 2 * 2  # architectures x optimizers x batch sizes
    assert len({json.dumps(s.hyperparameters.model_key()) for s in specs}) == 2
    # a stored value left out or null takes its default; a key this version does not know is refused
    assert Hyperparameters.of({"optimizer": "sgd", "momentum": None}) == Hyperparameters("sgd")
    with pytest.raises(TypeError, match="warmup_steps"):
        Hyperparameters.of({"optimizer": "sgd", "warmup_steps": 3})


def test_layers_are_normalised_and_keras_json_parsed(workdir):
    cfg = load(workdir, base_config())
    mlp, custom = cfg.architectures
    assert isinstance(mlp, Architecture)
    assert mlp.spec == {"layers": [
        {"type": "dense", "units": 64, "activation": "relu", "l2": 0.0},
        {"type": "dropout", "rate": 0.1},
        {"type": "dense", "units": 32, "activation": "relu", "l2": 0.0001},
        {"type": "batch_norm"},
    ]}
    assert custom.spec == {"keras_json": KERAS_FILES["good.json"]}


def test_functional_model_with_keras_modules_is_accepted(workdir):
    doc = base_config()
    doc["models"][1]["keras_json"] = "models/functional_ok.json"
    cfg = load(workdir, doc)
    assert cfg.architectures[1].spec["keras_json"]["class_name"] == "Functional"


def test_example_custom_json_is_accepted(tmp_path):
    example = REPO / "examples" / "models" / "custom.json"
    doc = base_config()
    doc["models"][1]["keras_json"] = str(example)
    cfg = load(tmp_path, doc)
    spec = cfg.architectures[1].spec["keras_json"]
    assert spec["class_name"] == "Sequential"
    layers = spec["config"]["layers"]
    assert layers[0]["config"]["batch_shape"] == [None, 8]
    assert [(l["config"]["units"], l["config"]["activation"]) for l in layers[1:]] == [(16, "relu"), (3, "softmax")]


def test_defaults(workdir):
    doc = {
        "data": {"table": "t", "features": ["x"], "label": "y", "task": "regression"},
        "models": [{"layers": [{"dense": 8}]}, {"keras_json": "models/good.json"}],
        "epochs": 2,
    }
    cfg = load(workdir, doc)
    assert cfg.name == "grid"
    assert cfg.data.validation_fraction == 0.2 and cfg.data.buffer_rows is None
    assert cfg.data.schema is None and cfg.data.name == "t"
    assert cfg.segments is None and cfg.cores_per_segment is None
    assert cfg.metric == "val_loss" and cfg.metric_mode == "min"
    assert cfg.search_method == "grid" and cfg.seed == 0 and cfg.samples is None
    assert cfg.scheduling == "cost" and cfg.retries is None  # ctq.coordinator.DEFAULT_RETRIES
    assert load(workdir, {**doc, "scheduling": "Random"}).scheduling == "random"
    assert load(workdir, {**doc, "retries": 0}).retries == 0
    assert [a.name for a in cfg.architectures] == ["model1", "good"]
    assert cfg.architectures[0].spec["layers"] == [{"type": "dense", "units": 8, "activation": "relu", "l2": 0.0}]
    assert [(m.optimizer, m.learning_rate, m.batch_size, m.momentum) for m in cfg.models] == [("adam", 0.001, 64, None)] * 2
    assert cfg.raw == doc


def test_metric_mode_and_training_metric_without_validation(workdir):
    doc = base_config()
    doc["data"]["validation_fraction"] = 0
    doc["metric"] = "accuracy"
    cfg = load(workdir, doc)
    assert cfg.metric_mode == "max" and cfg.data.validation_fraction == 0.0
    doc["metric"] = "loss"
    assert load(workdir, doc).metric_mode == "min"


def test_scalars_ints_for_floats_and_scientific_notation(workdir):
    text = """
data: {table: t, features: [a, b], label: y, task: regression, validation_fraction: 0.25, buffer_rows: 512}
segments: 4
cores_per_segment: 2
models: [{name: m, layers: [{dense: 4, l2: 1e-4}, {dropout: 0}]}]
search: {space: {optimizer: sgd, learning_rate: 1e-3, batch_size: 32, momentum: [0, 0.9]}}
epochs: 1
metric: val_mae
"""
    cfg = load(workdir, text)
    assert cfg.segments == 4 and cfg.cores_per_segment == 2 and cfg.data.buffer_rows == 512
    assert cfg.architectures[0].spec["layers"][0]["l2"] == 0.0001
    assert cfg.architectures[0].spec["layers"][1] == {"type": "dropout", "rate": 0.0}
    assert [(m.learning_rate, m.batch_size, m.momentum) for m in cfg.models] == [(0.001, 32, 0.0), (0.001, 32, 0.9)]
    assert all(isinstance(m.momentum, float) for m in cfg.models)
    assert [m.name for m in cfg.models] == ["m/sgd/lr=0.001/bs=32/mom=0", "m/sgd/lr=0.001/bs=32/mom=0.9"]


def test_momentum_only_multiplies_optimizers_that_use_it(workdir):
    doc = base_config()
    doc["search"]["space"] = {"optimizer": ["adam", "sgd", "rmsprop"], "momentum": [0.0, 0.5, 0.9]}
    cfg = load(workdir, doc)
    per_arch = [(m.optimizer, m.momentum) for m in cfg.models if m.architecture.name == "mlp-small"]
    assert per_arch == [("adam", None), ("sgd", 0.0), ("sgd", 0.5), ("sgd", 0.9),
                        ("rmsprop", 0.0), ("rmsprop", 0.5), ("rmsprop", 0.9)]
    assert len(cfg.models) == 14


def _random_doc(seed: int, samples: int = 40) -> dict:
    doc = base_config()
    doc["search"] = {
        "method": "random",
        "seed": seed,
        "samples": samples,
        "space": {
            "optimizer": ["adam", "sgd", "rmsprop"],
            "learning_rate": {"low": 1e-5, "high": 1e-1, "log": True},
            "batch_size": {"low": 16, "high": 512, "log": True},
            "momentum": {"low": 0.0, "high": 0.99},
        },
    }
    return doc


def _points(cfg: RunConfig):
    return [(m.architecture.name, *m.hyperparameters().as_dict().values(), m.seed) for m in cfg.models]


def test_random_search_reproducible_and_seed_dependent(workdir):
    a = load(workdir, _random_doc(3))
    b = load(workdir, _random_doc(3))
    c = load(workdir, _random_doc(4))
    assert len(a.models) == 40 and a.samples == 40
    assert _points(a) == _points(b)
    assert _points(a) != _points(c)
    assert [m.model_id for m in a.models] == list(range(1, 41))
    assert len({m.name for m in a.models}) == 40
    assert {m.architecture.name for m in a.models} == {"mlp-small", "custom"}
    for m in a.models:
        assert 1e-5 <= m.learning_rate <= 1e-1
        assert 16 <= m.batch_size <= 512 and isinstance(m.batch_size, int)
        if m.optimizer == "adam":
            assert m.momentum is None
        else:
            assert 0.0 <= m.momentum <= 0.99


def test_log_uniform_draws_cover_the_decades(workdir):
    cfg = load(workdir, _random_doc(11, samples=400))
    lrs = [m.learning_rate for m in cfg.models]
    assert all(1e-5 <= lr <= 1e-1 for lr in lrs)
    decades = {math.floor(math.log10(lr)) for lr in lrs}
    assert decades == {-5, -4, -3, -2}  # log-uniform: every decade is hit, not just the top one
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)
    assert 0.35 < below < 0.65  # half the log-range lies below 1e-3


@pytest.mark.parametrize("method", ["random", "asha", "hyperband"])
def test_drawn_samples_are_distinct_configurations(workdir, method):
    """A draw that repeats an earlier configuration is drawn again (a user trial: 4 of 5 random
    samples one configuration, the luckiest copy ranked best); a space of lists gives at most as
    many samples as it has configurations, as tpe's does."""
    doc = base_config()
    doc["search"] = {"method": method, "samples": 4, "seed": 1, "space": {"batch_size": [32, 64]}}
    if method != "random":
        doc["search"]["max_epochs"] = 3
        doc.pop("epochs", None)
    configurations = [(m.architecture.name, m.optimizer, m.learning_rate, m.batch_size) for m in load(workdir, doc).models]
    assert len(configurations) == 4 and len(set(configurations)) == 4  # all of them: 2 architectures x 2 sizes
    doc["search"]["samples"] = 5
    with pytest.raises(ConfigError, match="search.samples: 5 models, but search.space has only 4 distinct "
                                          "configurations .* 1 would repeat one; use samples: 4, or method: grid"):
        load(workdir, doc)


def test_asha_and_hyperband_take_the_grid_or_draws_and_max_epochs_replaces_epochs(workdir):
    doc = base_config()
    del doc["epochs"]
    doc["search"].update(method="asha", max_epochs=9, reduction_factor=3)
    cfg = load(workdir, doc)
    assert cfg.epochs == 9 and cfg.search_method == "asha"
    assert cfg.early_stopping == {"max_epochs": 9, "grace_period": 1, "reduction_factor": 3}
    assert _points(cfg) == _points(load(workdir, base_config()))  # the same grid
    drawn = _random_doc(3)
    del drawn["epochs"]
    drawn["search"].update(method="asha", max_epochs=4, grace_period=2)
    cfg = load(workdir, drawn)
    assert len(cfg.models) == 40 and cfg.early_stopping["grace_period"] == 2
    assert _points(cfg) == _points(load(workdir, _random_doc(3)))  # the same draws as method random
    assert fingerprint(cfg) != fingerprint(load(workdir, _random_doc(3)))
    drawn["search"]["method"] = "hyperband"  # the same keys, models and epochs; another run
    hyperband = load(workdir, drawn)
    assert (hyperband.search_method, hyperband.epochs, hyperband.early_stopping) == ("hyperband", 4, cfg.early_stopping)
    assert _points(hyperband) == _points(cfg) and fingerprint(hyperband) != fingerprint(cfg)


def test_fingerprint_stable_across_key_order_and_spelling(workdir):
    doc = base_config()
    fp = fingerprint(load(workdir, doc))
    assert len(fp) == 64 and int(fp, 16) >= 0
    reordered = {k: doc[k] for k in reversed(list(doc))}
    reordered["data"] = {k: doc["data"][k] for k in reversed(list(doc["data"]))}
    reordered["search"]["space"] = {k: doc["search"]["space"][k] for k in reversed(list(doc["search"]["space"]))}
    assert fingerprint(load(workdir, reordered)) == fp
    text = yaml.safe_dump(doc).replace("0.001", "1.0e-3")
    assert "1.0e-3" in text
    assert fingerprint(load(workdir, text)) == fp
    # the same file loaded from another directory (paths resolved elsewhere) keeps its fingerprint
    other = workdir / "sub"
    other.mkdir()
    (other / "models").mkdir()
    (other / "models" / "good.json").write_text(json.dumps(KERAS_FILES["good.json"], indent=1))
    assert fingerprint(load(other, doc)) == fp


def test_fingerprint_changes_with_content(workdir):
    doc = base_config()
    fp = fingerprint(load(workdir, doc))
    changed = copy.deepcopy(doc)
    changed["epochs"] = 6
    assert fingerprint(load(workdir, changed)) != fp
    changed = copy.deepcopy(doc)
    changed["search"]["seed"] = 8
    assert fingerprint(load(workdir, changed)) != fp
    changed = copy.deepcopy(doc)
    changed["models"][1]["keras_json"] = "models/functional_ok.json"
    changed["models"][1]["name"] = "custom"
    assert fingerprint(load(workdir, changed)) != fp


def test_grid_order_does_not_depend_on_space_key_order(workdir):
    doc = base_config()
    doc["search"]["space"] = {"batch_size": [64, 256], "learning_rate": [0.001, 0.01], "optimizer": ["adam", "sgd"]}
    assert _points(load(workdir, doc)) == _points(load(workdir, base_config()))


@pytest.mark.parametrize(
    "table, schema, name",
    [
        ("t", None, "t"),
        ("s.t", "s", "t"),
        ("MySchema.MyTable", "MySchema", "MyTable"),
        ('"My Schema"."T.x"', "My Schema", "T.x"),
        ('public."odd""name"', "public", 'odd"name'),
        ('"only quoted"', None, "only quoted"),
    ],
)
def test_table_parsing(workdir, table, schema, name):
    assert parse_table_name(table) == (schema, name)
    doc = base_config()
    doc["data"]["table"] = table
    data = load(workdir, doc).data
    assert (data.table, data.schema, data.name) == (table, schema, name)


def test_unusual_identifiers_are_left_to_the_database(workdir):
    doc = base_config()
    doc["data"]["features"] = ['a"; drop table x;--', "Ünïcode col", "f3"]
    cfg = load(workdir, doc)
    assert cfg.data.features[0] == 'a"; drop table x;--'


def test_raw_is_json_serialisable_and_dates_stay_strings(workdir):
    doc = base_config()
    doc["name"] = "2024-01-01"
    text = yaml.safe_dump(doc).replace("'2024-01-01'", "2024-01-01")
    cfg = load(workdir, text)
    assert cfg.name == "2024-01-01"
    assert json.loads(json.dumps(cfg.raw)) == cfg.raw


def test_parse_config_from_string(workdir):
    text = yaml.safe_dump(base_config())
    cfg = parse_config(text, base_dir=str(workdir))
    assert cfg.source_path == "<string>" and cfg.name == "demo"
    assert len(cfg.models) == 16


def test_documented_example_is_valid(tmp_path):
    """The annotated example in the module docstring (shown in docs/grid-yaml.md) must load as written."""
    import shutil

    import ctq.config

    block = ctq.config.__doc__.split(".. code-block:: yaml\n")[1].split("\nLayer shorthand")[0]
    text = "\n".join(line[4:] for line in block.splitlines())
    (tmp_path / "models").mkdir()
    shutil.copy(REPO / "examples" / "models" / "custom.json", tmp_path / "models" / "custom.json")
    cfg = load(tmp_path, text)
    assert cfg.name == "demo" and cfg.metric_mode == "max"
    assert len(cfg.models) == 2 * (2 * 2 * (1 + 2))  # adam x 1 momentum-less + sgd x 2 momenta
    assert cfg.segments == 2 and cfg.data.buffer_rows == 4096


def test_quoted_table_names_round_trip():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    part = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)

    def quote(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(st.none(), part), part)
    def check(schema, name):
        text = quote(name) if schema is None else f"{quote(schema)}.{quote(name)}"
        assert parse_table_name(text) == (schema, name)

    check()


@pytest.mark.parametrize("method", ["asha", "hyperband"])
def test_halving_examples_are_valid(method):
    cfg = load_config(REPO / "examples" / f"{method}.yaml")
    assert (cfg.search_method, cfg.epochs, len(cfg.models)) == (method, 9, 18)
    assert cfg.early_stopping == {"max_epochs": 9, "grace_period": 1, "reduction_factor": 3}

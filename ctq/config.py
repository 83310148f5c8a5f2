"""Load, validate and expand a ``grid.yaml`` run configuration (no database; Keras only for keras_json).

``ctq train grid.yaml`` reads one YAML file that says which table to learn from, which Keras
architectures to try, which hyper-parameters to search over, and how to rank the results.
:func:`load_config` turns it into a frozen :class:`RunConfig` whose ``models`` tuple is the expanded
search: one :class:`ModelConfig` per (architecture, hyper-parameters) point, numbered 1..M.

File format
-----------

.. code-block:: yaml

    name: demo                      # optional; default: the file name without its extension
    data:                           # required
      table: public.my_table        # required; "table" or "schema.table"; "Quoted"."Names" allowed
      features: [f1, f2, f3]        # required; non-empty list of distinct column names, or all:
                                    #   every column of the table but the label and exclude (a name
                                    #   finds its column exactly, or, written with capitals, the
                                    #   column of its lower case, as unquoted SQL folds: F1 finds
                                    #   f1, age does not find "Age"; the label and table too)
                                    #   (a single array column is written as a 1-element list);
                                    #   a categorical column is written {column: c, encoding: e}
                                    #   with e one_hot (one input per value) or index (the value's
                                    #   index, 1..V, for an Embedding; every feature then index)
      # exclude: [id, name]       # optional, with features: all only: columns that are not features
      # feature_shape: [28, 28, 1]  # optional, a single real[]/float8[] feature only: each row's
                                    #   array reshaped to this shape (its length must be the product)
      label: target                 # required; a column name, not one of the features
      task: classification          # required; classification | regression
      validation_fraction: 0.2      # optional, 0 <= f < 1, default 0.2 (0 only with a non-val_ metric)
      buffer_rows: 4096             # optional positive int: examples packed per buffer row
      class_weight: balanced        # optional, classification only: weigh each class by
                                    #   rows / (classes x its rows) in training (as scikit-learn's
                                    #   "balanced"), for imbalanced labels
    segments: 2                     # optional positive int <= 256; default: the engine's (PostgreSQL:
                                    #   the cores of the machine ctq runs on; Greenplum: its primaries)
    cores_per_segment: 1            # optional positive int; default: the cores / segments
    memory_budget_mb: 512           # optional positive int: when a segment's decoded data (its training
                                    #   share + the validation set) would not fit, it streams its
                                    #   buffers on every hop instead of caching them; a model whose
                                    #   training (2.6 x its state, + the cached data) would not fit
                                    #   is refused (exit 2). Default: the server's memory shared by
                                    #   the segments on its host (no streaming then)
    checkpoint_minutes: 5           # optional number >= 0: a model's state after an epoch is stored
                                    #   durably (a checkpoint) when its last checkpoint is this old;
                                    #   in between, hops store it unlogged (fast) and a server crash
                                    #   sends the model back to its checkpoint. 0: every epoch. Its
                                    #   last epoch, and every epoch under asha/hyperband, always are.
    models:                         # required; non-empty list of architectures (names unique)
      - name: mlp-small             # optional; default "model<N>" (N = position, from 1) for layers,
                                    #   the file name without extension for keras_json
        layers:                     # inline Keras Sequential shorthand (may be empty: a linear
                                    #   model); the output layer is added automatically
          - {dense: 64, activation: relu}       # units > 0; activation default relu
          - {dropout: 0.1}                      # 0 <= rate < 1
          - {dense: 32, activation: relu, l2: 0.0001}   # l2 >= 0, default 0
          - {batch_norm: true}
      - name: custom
        keras_json: models/custom.json   # relative to the YAML file's folder: Model.to_json() output
    search:                         # optional; default: grid over the defaults below
      method: grid                  # grid | random | asha | hyperband | tpe; default grid
      seed: 7                       # non-negative int, default 0
      # samples: 10                 # random, tpe: required, number of models (<= 10000); asha,
                                    #   hyperband: optional, draws that many models instead of the grid
      # grace_period: 1             # asha, hyperband only: epochs before the first rung (positive
                                    #   int, default 1)
      # reduction_factor: 3         # asha, hyperband only: 1 in reduction_factor goes on at each
                                    #   rung (int >= 2, default 3)
      # max_epochs: 9               # asha, hyperband only, required there: replaces the top-level
                                    #   epochs
      space:                        # keys: optimizer, learning_rate, batch_size, momentum
        optimizer: [adam, sgd]      # adam | sgd | rmsprop | adamw | adagrad | nadam; default adam
        learning_rate: [0.001, 0.01]   # > 0; default 0.001
        batch_size: [64, 256]       # positive int; default 64
        momentum: [0.0, 0.9]        # 0 <= m < 1; only used by sgd and rmsprop; default: none
    epochs: 5                       # required positive int (absent with search.method: asha or
                                    #   hyperband)
    warm_start: 12                  # optional run id: each model starts from the final weights of that
                                    #   run's best trained model of the same architecture
    scheduling: cost                # optional; MOP's choice among eligible models when a segment
                                    #   frees up: cost (default: most estimated work left first, from
                                    #   the warm-up's timing, then the observed hop durations) |
                                    #   random (seeded preference)
    metric: val_accuracy            # val_loss | val_accuracy | val_auc | val_f1 | val_precision |
                                    #   val_recall | val_mae, or the same without val_ (training);
                                    #   default val_loss. mae needs regression, the others but loss
                                    #   classification

Layer shorthand: every entry of ``layers`` is a mapping with exactly one layer kind — ``dense:
<units>`` (with optional ``activation``: relu, tanh, sigmoid, elu, selu, gelu, softplus, swish,
leaky_relu, linear; and ``l2``), ``dropout: <rate>`` or ``batch_norm: true``. Each is normalised to
``{"type": "dense", "units": 64, "activation": "relu", "l2": 0.0}``, ``{"type": "dropout",
"rate": 0.1}`` or ``{"type": "batch_norm"}``.

Features: a plain entry is a numeric column (standardised), or the single array column of
``data.features``; ``{column: c, encoding: one_hot}`` is a categorical column (any single-valued
type) with one input per value of its vocabulary (computed by the database, at most 100 values);
``{column: c, encoding: index}`` gives the value's position 1..V instead (0: NULL or a value not
in the vocabulary), for an Embedding layer: then every feature must be index-encoded and every
model a keras_json one. ``feature_shape`` reshapes a single array column's rows (images), which
are then standardised by one mean and standard deviation over all positions. The ranking metrics
auc, f1, precision and recall are those of the second class with two classes, the macro average
over the classes otherwise (see ctq.indb.make_metric); they, like accuracy, rank highest first.

``keras_json`` files must hold a Keras model config (top-level ``class_name`` Sequential,
Functional or Model, and a ``config``). Anything that carries Python code is refused: ``Lambda``
layers, serialized lambdas (``__lambda__``, ``function_type: lambda``), objects from the
``builtins``/``os``/``posix``/``subprocess`` (and similar) modules, and strings naming
``os.system``, ``eval``, ``exec``, ``subprocess.Popen``... (the server also deserializes with Keras
safe mode, as a second line of defence). Every ``keras_json`` model is then deserialized here as the
server will (Keras 3, safe mode; Keras is imported only for configs that have such models): a Keras 2
model JSON or an unregistered custom class is refused (``grid.yaml:models[2].keras_json: Keras cannot
load models/old.json: Could not locate class 'Sequential' ...``) instead of failing the run at warm-up.

Search space values: a scalar is a one-value list. With ``method: grid`` every architecture is
combined with every combination of the space values, in the fixed key order optimizer,
learning_rate, batch_size, momentum (the last varying fastest); momentum only multiplies the
optimizers that use it (sgd, rmsprop), the others get no momentum. With ``method: random``,
``samples`` models are drawn, each picking an architecture uniformly and each hyper-parameter from
its spec: a list is a uniform choice; a range ``{low: a, high: b, log: false}`` is uniform (or
log-uniform with ``log: true``) on [a, b] for learning_rate and momentum, and a uniform integer in
[a, b] for batch_size. Draws are Optuna's RandomSampler's (:func:`ctq.search.random.random_points`),
reproducible from ``search.seed``. Expanded searches are capped at 10,000 models.

With ``method: asha`` the models are the grid (or, with ``samples``, random draws as above) and
asynchronous successive halving stops the weak ones early (:class:`ctq.search.asha.Asha`): rungs after
``grace_period * reduction_factor**k`` epochs, below ``max_epochs``. ``method: hyperband`` takes the
same keys and runs brackets of it that start stopping at different rungs, as Optuna's
HyperbandPruner does (:class:`ctq.search.hyperband.Hyperband`). With ``method: tpe`` no model of
the run exists up front (the architectures under ``models:`` are still required): ``samples``
configurations are asked of Optuna's TPE sampler during the run, as slots free up
(:class:`ctq.search.tpe.Tpe`); more ``samples`` than a finite space
has distinct configurations is refused (TPE would ask some again).

Optional keys may also be written as ``null``, which means "use the default". Every problem is a
:class:`~ctq.errors.ConfigError` (exit code 2) naming the file and the key path, for example
``grid.yaml:models[1].layers[0].dense: expected a positive integer, got 'abc'``. Unknown keys get a
"did you mean" suggestion. Besides YAML 1.1, floats such as ``1e-3`` are read as numbers and dates
stay strings; duplicate keys in a mapping are an error.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ctq.errors import ConfigError
from ctq.metrics import CLASSIFICATION_METRICS, MAE_METRICS, MAX_METRICS, METRICS, Metric  # noqa: F401
from ctq.rules import ACTIVATIONS, DEFAULTS, MOMENTUM_OPTIMIZERS, OPTIMIZERS, find_code  # noqa: F401 (the schema reads them here)
from ctq.scheduler import SCHEDULING_RULES
from ctq.search import METHODS, search_class
from ctq.search.base import MAX_MODELS

__all__ = [
    "DataConfig",
    "Architecture",
    "ModelConfig",
    "RunConfig",
    "load_config",
    "parse_config",
    "fingerprint",
    "parse_table_name",
    "MAX_MODELS",
]

MAX_SEGMENTS = 256
MAX_KERAS_JSON_BYTES = 64 * 1024 * 1024
FINGERPRINT_VERSION = 1

TASKS = ("classification", "regression")
# the metric names and what they mean: ctq.metrics (one definition for the whole client)
ENCODINGS = ("one_hot", "index")
CLASS_WEIGHTS = ("balanced",)
SEARCH_METHODS = tuple(METHODS)
# early stopping (successive halving): grace_period, reduction_factor, max_epochs
EARLY_STOPPING_METHODS = tuple(name for name, cls in METHODS.items() if cls.early_stopping)
SPACE_KEYS = ("optimizer", "learning_rate", "batch_size", "momentum")
KERAS_MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})

_TOP_KEYS = ("name", "data", "segments", "cores_per_segment", "memory_budget_mb", "checkpoint_minutes", "models",
             "search", "epochs", "metric", "scheduling", "warm_start")
_DATA_KEYS = ("table", "features", "label", "task", "validation_fraction", "buffer_rows", "class_weight",
              "feature_shape", "exclude")
ALL_FEATURES = "all"  # data.features: every column of the table but the label and data.exclude
_FEATURE_KEYS = ("column", "encoding")
_MODEL_KEYS = ("name", "layers", "keras_json")
_SEARCH_KEYS = ("method", "seed", "samples", "space", "grace_period", "reduction_factor", "max_epochs")
_RANGE_KEYS = ("low", "high", "log")
_LAYER_KINDS = ("dense", "dropout", "batch_norm")
_LAYER_OPTIONS = {"dense": ("activation", "l2"), "dropout": (), "batch_norm": ()}



# --------------------------------------------------------------------------------------------
# Public data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    table: str  # as written in the file
    schema: str | None  # None if unqualified; quotes removed, case kept
    name: str  # the table name, quotes removed, case kept
    features: tuple[str, ...]
    label: str
    task: str  # "classification" | "regression"
    validation_fraction: float
    buffer_rows: int | None
    class_weight: str | None = None  # "balanced": each class weighs n / (classes x its count)
    encodings: tuple[tuple[str, str], ...] = ()  # (column, "one_hot" | "index") of categorical features
    feature_shape: tuple[int, ...] | None = None  # the shape of an array feature's rows
    all_features: bool = False  # features: all: every numeric column but the label and ``exclude``,
    exclude: tuple[str, ...] = ()  # resolved when the source is checked (packing.inspect_source)

    def encoding(self, column: str) -> str | None:
        """The encoding of a categorical feature column, None for a numeric one."""
        return dict(self.encodings).get(column)


@dataclass(frozen=True)
class Architecture:
    name: str
    spec: dict  # {"layers": [canonical layer dicts]} or {"keras_json": <parsed JSON dict>}


@dataclass(frozen=True)
class ModelConfig:
    """One point of the search: one architecture with one set of hyper-parameters."""

    model_id: int
    name: str
    architecture: Architecture
    optimizer: str
    learning_rate: float
    batch_size: int
    momentum: float | None
    seed: int

    def hyperparameters(self) -> dict:
        """JSON-able hyper-parameters; ``momentum`` is None where the optimizer does not use it."""
        return {
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "momentum": self.momentum,
        }


@dataclass(frozen=True)
class RunConfig:
    source_path: str
    name: str
    data: DataConfig
    segments: int | None
    cores_per_segment: int | None
    architectures: tuple[Architecture, ...]
    search_method: str
    seed: int
    epochs: int
    metric: str
    models: tuple[ModelConfig, ...]
    raw: dict  # the parsed YAML, JSON-serialisable
    samples: int | None = None  # random search only
    space: dict = field(default_factory=dict)  # normalised search space (JSON-able)
    memory_budget_mb: int | None = None  # per segment: over it, a segment streams its data
    checkpoint_minutes: float | None = None  # None: ctq.coordinator.DEFAULT_CHECKPOINT_SECONDS
    early_stopping: dict | None = None  # EARLY_STOPPING_METHODS: {"grace_period", "reduction_factor", "max_epochs"}
    scheduling: str = "cost"  # MOP's rule among eligible models: cost | random
    warm_start: int | None = None  # a run whose final states the models start from

    @property
    def metric_mode(self) -> str:
        return Metric(self.metric).mode


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read, validate and expand the YAML file at ``path``. Raises :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", path=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a YAML file", path=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", path=source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the file is not valid UTF-8 (byte {exc.start})", path=source) from None
    base_dir = os.path.dirname(os.path.abspath(source))
    return parse_config(text, source_path=source, base_dir=base_dir)


def parse_config(text: str, source_path: str = "<string>", base_dir: str | None = None) -> RunConfig:
    """Like :func:`load_config`, from YAML text. ``keras_json`` paths resolve against ``base_dir``
    (default: the current directory)."""
    doc = _parse_yaml(text, source_path)
    if base_dir is None:
        base_dir = os.getcwd()
    return _Validator(source_path, base_dir).run_config(doc)


def fingerprint(config: RunConfig) -> str:
    """Stable sha256 (hex) of the canonical configuration: independent of key order, spelling of
    numbers and the file's location; changes with anything that changes what would be trained."""
    canonical = {
        "version": FINGERPRINT_VERSION,
        "name": config.name,
        "data": {
            "schema": config.data.schema,
            "table": config.data.name,
            "features": ALL_FEATURES if config.data.all_features else list(config.data.features),
            **({"exclude": list(config.data.exclude)} if config.data.exclude else {}),
            "label": config.data.label,
            "task": config.data.task,
            "validation_fraction": config.data.validation_fraction,
            "buffer_rows": config.data.buffer_rows,
            **({"class_weight": config.data.class_weight} if config.data.class_weight else {}),
            **({"encodings": [list(e) for e in config.data.encodings]} if config.data.encodings else {}),
            **({"feature_shape": list(config.data.feature_shape)} if config.data.feature_shape else {}),
        },
        "segments": config.segments,
        "cores_per_segment": config.cores_per_segment,
        "architectures": [{"name": a.name, "spec": a.spec} for a in config.architectures],
        "search": {
            "method": config.search_method,
            "seed": config.seed,
            "samples": config.samples,
            "space": config.space,
            # "asha": the key under which runs already recorded their fingerprints
            **({"asha": config.early_stopping} if config.early_stopping else {}),
        },
        "epochs": config.epochs,
        "metric": config.metric,
        **({"warm_start": config.warm_start} if config.warm_start else {}),
        "models": [
            [m.model_id, m.name, m.architecture.name, m.hyperparameters(), m.seed] for m in config.models
        ],
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def parse_table_name(text: str) -> tuple[str | None, str]:
    """Split ``table`` / ``schema.table`` / ``"My Schema"."T.x"`` into (schema, name).

    Quoted parts lose their quotes (``""`` inside stands for one ``"``); unquoted parts are kept as
    written (no case folding). Raises ``ValueError`` with a readable reason.
    """
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise ValueError("unterminated quoted name")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    j += 1
                    break
                buf.append(text[j])
                j += 1
            part = "".join(buf)
            if j < n and text[j] != ".":
                raise ValueError(f"unexpected {text[j]!r} after a quoted name")
            i = j
        else:
            j = text.find(".", i)
            if j < 0:
                j = n
            part = text[i:j]
            i = j
        if part == "":
            raise ValueError("empty name part")
        parts.append(part)
        if i >= n:
            break
        i += 1  # skip the dot
        if i >= n:
            raise ValueError("empty name part after '.'")
    if len(parts) > 2:
        raise ValueError("expected 'table' or 'schema.table', got more than two dotted parts")
    if len(parts) == 1:
        return None, parts[0]
    return parts[0], parts[1]


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, reads ``1e-3`` as a float and keeps dates as text."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}", key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise ConfigError(f"invalid YAML{where}: {problem}{context}", path=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=source) from None


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _join(parent: str, key: Any) -> str:
    return f"{parent}.{key}" if parent else str(key)


def _index(parent: str, i: int) -> str:
    return f"{parent}[{i}]"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: Any, choices: tuple[str, ...] | list[str]) -> str:
    """A "did you mean" for a word not among ``choices``: the one choice it abbreviates (val_acc:
    val_accuracy, not the closer-spelled val_auc), else the closest spelling (difflib)."""
    if not isinstance(word, str):
        return ""
    lowered = {c.lower(): c for c in choices}
    extending = [c for c in lowered if word and c.startswith(word.lower())]
    match = extending if len(extending) == 1 else difflib.get_close_matches(word.lower(), list(lowered), n=1,
                                                                            cutoff=0.6)
    return f" (did you mean '{lowered[match[0]]}'?)" if match else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad_char(text: str) -> str | None:
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return ch
    return None


def _fmt(x: float) -> str:
    return format(x, ".4g")


@dataclass
class _Range:
    low: float
    high: float
    log: bool
    integer: bool


class _Validator:
    def __init__(self, source: str, base_dir: str):
        self.source = source
        self.base_dir = base_dir

    # -- primitives -------------------------------------------------------------------------

    def fail(self, key: str, message: str):
        raise ConfigError(message, path=self.source, key=key or None)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {_describe(value)}")
        for k in value:
            if not isinstance(k, str) or k not in allowed:
                hint = _suggest(k, allowed) or f" (allowed: {', '.join(allowed)})"
                self.fail(_join(key, k), f"unknown key {str(k)!r}{hint}")
        for r in required:
            if r not in value:
                self.fail(_join(key, r), "required key is missing")
        return value

    def int_(self, value: Any, key: str, *, minimum: int = 1, maximum: int | None = None) -> int:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        if not _is_int(value):
            self.fail(key, f"expected {what}, got {_describe(value)}")
        if value < minimum:
            self.fail(key, f"expected {what}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum}, got {value}")
        return int(value)

    def number(self, value: Any, key: str, what: str) -> float:
        if not _is_number(value) or not math.isfinite(value):
            self.fail(key, f"expected {what}, got {_describe(value)}")
        return float(value)

    def string(self, value: Any, key: str, what: str = "a non-empty string") -> str:
        if not isinstance(value, str) or value == "":
            self.fail(key, f"expected {what}, got {_describe(value)}")
        bad = _bad_char(value)
        if bad is not None:
            self.fail(key, f"contains a control character {bad!r}: {value!r}")
        return value

    def identifier(self, value: Any, key: str) -> str:
        return self.string(value, key, "a non-empty column name (string)")

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        hint = _suggest(value, choices)
        self.fail(key, f"expected one of {', '.join(choices)}, got {_describe(value)}{hint}")

    # -- sections ---------------------------------------------------------------------------

    def run_config(self, doc: Any) -> RunConfig:
        if doc is None:
            self.fail("", "the file is empty; expected a mapping with keys data, models, epochs")
        if not isinstance(doc, dict):
            self.fail("", f"expected a mapping at the top level, got {_describe(doc)}")
        self.mapping(doc, "", _TOP_KEYS, required=("data", "models"))

        name = doc.get("name")
        if name is None:
            name = "run" if self.source.startswith("<") else (Path(self.source).stem or "run")
        else:
            name = self.string(name, "name", "a non-empty string")

        data = self.data(doc["data"])
        segments = doc.get("segments")
        if segments is not None:
            segments = self.int_(segments, "segments", maximum=MAX_SEGMENTS)
        cores = doc.get("cores_per_segment")
        if cores is not None:
            cores = self.int_(cores, "cores_per_segment")
        budget = doc.get("memory_budget_mb")
        if budget is not None:
            budget = self.int_(budget, "memory_budget_mb")
        checkpoint_minutes = doc.get("checkpoint_minutes")
        if checkpoint_minutes is not None:
            checkpoint_minutes = self.number(checkpoint_minutes, "checkpoint_minutes", "a number of minutes >= 0")
            if checkpoint_minutes < 0:
                self.fail("checkpoint_minutes", f"expected a number of minutes >= 0, got {checkpoint_minutes:g}")
        scheduling = doc.get("scheduling")
        scheduling = "cost" if scheduling is None else self.choice(scheduling, "scheduling", SCHEDULING_RULES)
        warm_start = doc.get("warm_start")
        if warm_start is not None:
            warm_start = self.int_(warm_start, "warm_start")

        metric = doc.get("metric")
        metric = "val_loss" if metric is None else self.choice(metric, "metric", METRICS)
        if metric in MAX_METRICS and data.task != "classification":
            self.fail("metric", f"{metric} needs data.task: classification (this task is {data.task})")
        if metric in MAE_METRICS and data.task != "regression":
            self.fail("metric", f"{metric} needs data.task: regression (this task is {data.task})")
        if metric.startswith("val_") and data.validation_fraction <= 0:
            self.fail(
                "data.validation_fraction",
                f"must be > 0 when the metric is {metric} (it needs a validation set); "
                "use a training metric (loss, accuracy, mae) or a fraction such as 0.2",
            )

        architectures = self.architectures(doc["models"])
        if any(e == "index" for _, e in data.encodings):
            for i, arch in enumerate(architectures):
                if "layers" in arch.spec:
                    self.fail(_index("models", i), f"model {arch.name!r} uses layers:, but the features are "
                              "index-encoded (integer indices for an Embedding): use a keras_json model "
                              "that starts with an Embedding, or encoding: one_hot")
        method, seed, samples, space, early_stopping = self.search(doc.get("search"))
        if early_stopping is not None:
            if doc.get("epochs") is not None:
                self.fail("epochs", f"search.method: {method} trains up to search.max_epochs; remove epochs")
            epochs = early_stopping["max_epochs"]
        elif "epochs" not in doc:
            self.fail("epochs", "required key is missing")
        else:
            epochs = self.int_(doc["epochs"], "epochs")
        if search_class(method).asks_during_run:
            size = len(architectures) * _combinations(space)
            if samples > size:  # TPE asks a configuration again once all have been asked
                self.fail("search.samples", f"{samples} models, but search.space has only {size} distinct "
                          f"configurations ({len(architectures)} architecture(s) x {_combinations(space)} "
                          f"hyper-parameter combinations): {samples - size} would repeat one; use samples: "
                          f"{size}, or method: grid")
        try:
            points = search_class(method).initial_points(_space_json(space), len(architectures), samples, seed,
                                                         MOMENTUM_OPTIMIZERS)
        except ValueError as exc:  # too many models
            self.fail("search.space", str(exc))
        models = _number_models([(architectures[a], *rest) for a, *rest in points], seed)

        try:
            raw = json.loads(json.dumps(doc))
        except (TypeError, ValueError) as exc:  # pragma: no cover - every value was validated
            self.fail("", f"the configuration cannot be stored as JSON: {exc}")

        return RunConfig(
            source_path=self.source,
            name=name,
            data=data,
            segments=segments,
            cores_per_segment=cores,
            architectures=tuple(architectures),
            search_method=method,
            seed=seed,
            epochs=epochs,
            metric=metric,
            models=tuple(models),
            raw=raw,
            samples=samples,
            space=_space_json(space),
            memory_budget_mb=budget,
            checkpoint_minutes=checkpoint_minutes,
            early_stopping=early_stopping,
            scheduling=scheduling,
            warm_start=warm_start,
        )

    def data(self, value: Any) -> DataConfig:
        d = self.mapping(value, "data", _DATA_KEYS, required=("table", "features", "label", "task"))
        table = self.string(d["table"], "data.table", "a table name (string)")
        try:
            schema, tname = parse_table_name(table)
        except ValueError as exc:
            self.fail("data.table", f"invalid table name {table!r}: {exc}")
        for part in (schema, tname):
            if part is not None:
                self.string(part, "data.table")

        features = d["features"]
        all_features = features == ALL_FEATURES
        if all_features:
            features = []
        elif not isinstance(features, list) or not features:
            self.fail(
                "data.features",
                f"expected a non-empty list of column names, or {ALL_FEATURES} (every column but the label "
                f"and data.exclude), got {_describe(features)}"
                + (" (write a single column as [name])" if isinstance(features, str) else ""),
            )
        exclude = d.get("exclude")
        if exclude is not None:
            if not all_features:
                self.fail("data.exclude", f"only with data.features: {ALL_FEATURES} (a listed set of features "
                          "excludes the rest already)")
            if not isinstance(exclude, list):
                self.fail("data.exclude", f"expected a list of column names, got {_describe(exclude)}")
            exclude = tuple(self.identifier(c, _index("data.exclude", i)) for i, c in enumerate(exclude))
        feats: list[str] = []
        encodings: list[tuple[str, str]] = []
        for i, f in enumerate(features):
            fkey = _index("data.features", i)
            if isinstance(f, dict):
                self.mapping(f, fkey, _FEATURE_KEYS, required=("column", "encoding"))
                col = self.identifier(f["column"], _join(fkey, "column"))
                encodings.append((col, self.choice(f["encoding"], _join(fkey, "encoding"), ENCODINGS)))
            else:
                col = self.identifier(f, fkey)
            if col in feats:
                self.fail(fkey, f"duplicate column {col!r}")
            feats.append(col)
        if any(e == "index" for _, e in encodings) and len(encodings) < len(feats):
            self.fail("data.features", "with encoding: index, every feature must be index-encoded (the model's "
                      "input is then one integer index per feature, for an Embedding layer); use encoding: "
                      "one_hot to mix categorical and numeric features")
        shape = d.get("feature_shape")
        if shape is not None:
            if not isinstance(shape, list) or not shape:
                self.fail("data.feature_shape", f"expected a list of positive integers such as [28, 28, 1], "
                          f"got {_describe(shape)}")
            shape = tuple(self.int_(v, _index("data.feature_shape", i)) for i, v in enumerate(shape))
            if len(feats) != 1 or encodings or all_features:
                self.fail("data.feature_shape", "needs exactly one feature, a real[]/float8[] column whose "
                          "arrays are reshaped to it")
        label = self.identifier(d["label"], "data.label")
        if label in feats:
            self.fail("data.label", f"the label {label!r} is also listed in data.features")
        task = self.choice(d["task"], "data.task", TASKS)

        vf = d.get("validation_fraction")
        if vf is None:
            vf = 0.2
        else:
            vf = self.number(vf, "data.validation_fraction", "a number in [0, 1)")
            if not 0 <= vf < 1:
                self.fail("data.validation_fraction", f"expected a number in [0, 1), got {_describe(d['validation_fraction'])}")
        buffer_rows = d.get("buffer_rows")
        if buffer_rows is not None:
            buffer_rows = self.int_(buffer_rows, "data.buffer_rows")
        class_weight = d.get("class_weight")
        if class_weight is not None:
            class_weight = self.choice(class_weight, "data.class_weight", CLASS_WEIGHTS)
            if task != "classification":
                self.fail("data.class_weight", "class weights need task: classification")
        return DataConfig(
            table=table, schema=schema, name=tname, features=tuple(feats), label=label, task=task,
            validation_fraction=vf, buffer_rows=buffer_rows, class_weight=class_weight,
            encodings=tuple(encodings), feature_shape=shape, all_features=all_features, exclude=exclude or (),
        )

    def architectures(self, value: Any) -> list[Architecture]:
        if not isinstance(value, list) or not value:
            self.fail("models", f"expected a non-empty list of architectures, got {_describe(value)}")
        result: list[Architecture] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(value):
            key = _index("models", i)
            m = self.mapping(entry, key, _MODEL_KEYS)
            has_layers, has_json = "layers" in m, "keras_json" in m
            if has_layers == has_json:
                self.fail(key, "each model needs exactly one of 'layers' or 'keras_json'"
                          + (" (both given)" if has_layers else " (neither given)"))
            if has_layers:
                spec = {"layers": self.layers(m["layers"], _join(key, "layers"))}
            else:
                spec = {"keras_json": self.keras_json(m["keras_json"], _join(key, "keras_json"))}
            name = m.get("name")
            if name is None:
                name = Path(m["keras_json"]).stem if has_json else f"model{i + 1}"
            else:
                name = self.string(name, _join(key, "name"))
            if name in seen:
                self.fail(_join(key, "name"), f"duplicate model name {name!r} (also models[{seen[name]}])")
            seen[name] = i
            result.append(Architecture(name=name, spec=spec))
        return result

    def layers(self, value: Any, key: str) -> list[dict]:
        if not isinstance(value, list):
            self.fail(key, f"expected a list of layers, got {_describe(value)}")
        out = []
        for i, entry in enumerate(value):
            lkey = _index(key, i)
            if not isinstance(entry, dict):
                self.fail(lkey, f"expected a layer mapping such as {{dense: 64}}, got {_describe(entry)}")
            kinds = [k for k in _LAYER_KINDS if k in entry]
            if not kinds:
                unknown = next((k for k in entry if k not in _LAYER_KINDS), None)
                if unknown is not None:
                    self.fail(_join(lkey, unknown), f"unknown layer kind {str(unknown)!r}"
                              + (_suggest(unknown, _LAYER_KINDS) or f" (allowed: {', '.join(_LAYER_KINDS)})"))
                self.fail(lkey, f"empty layer; expected one of {', '.join(_LAYER_KINDS)}")
            if len(kinds) > 1:
                self.fail(lkey, f"a layer has exactly one kind, got {' and '.join(kinds)}")
            kind = kinds[0]
            self.mapping(entry, lkey, (kind,) + _LAYER_OPTIONS[kind])
            if kind == "dense":
                units = self.int_(entry["dense"], _join(lkey, "dense"))
                act = entry.get("activation")
                act = "relu" if act is None else self.choice(act, _join(lkey, "activation"), ACTIVATIONS)
                l2 = entry.get("l2")
                l2 = 0.0 if l2 is None else self.number(l2, _join(lkey, "l2"), "a number >= 0")
                if l2 < 0:
                    self.fail(_join(lkey, "l2"), f"expected a number >= 0, got {entry['l2']!r}")
                out.append({"type": "dense", "units": units, "activation": act, "l2": l2})
            elif kind == "dropout":
                rate = self.number(entry["dropout"], _join(lkey, "dropout"), "a rate in [0, 1)")
                if not 0 <= rate < 1:
                    self.fail(_join(lkey, "dropout"), f"expected a rate in [0, 1), got {entry['dropout']!r}")
                out.append({"type": "dropout", "rate": rate})
            else:
                if entry["batch_norm"] is not True:
                    self.fail(_join(lkey, "batch_norm"), f"expected true, got {_describe(entry['batch_norm'])}")
                out.append({"type": "batch_norm"})
        return out

    def keras_json(self, value: Any, key: str) -> dict:
        rel = self.string(value, key, "a path to a Keras model JSON file")
        path = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(rel)))
        try:
            size = os.path.getsize(path)
            if size > MAX_KERAS_JSON_BYTES:
                self.fail(key, f"{path}: file is too large ({size} bytes; the limit is {MAX_KERAS_JSON_BYTES})")
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            self.fail(key, f"file not found: {path}")
        except IsADirectoryError:
            self.fail(key, f"is a directory, not a JSON file: {path}")
        except OSError as exc:
            self.fail(key, f"cannot read {path}: {exc.strerror or exc}")
        try:
            doc = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            self.fail(key, f"{path}: not valid UTF-8 text")
        except (ValueError, RecursionError) as exc:
            self.fail(key, f"{path}: invalid JSON: {exc}")
        if (
            not isinstance(doc, dict)
            or doc.get("class_name") not in KERAS_MODEL_CLASSES
            or not isinstance(doc.get("config"), dict)
        ):
            found = (f"found class_name {doc.get('class_name')!r}" if isinstance(doc, dict)
                     else f"the file holds {_describe(doc)}")
            self.fail(
                key,
                f"{path}: not a Keras model config (expected the output of Model.to_json(): a "
                f"top-level \"class_name\" of Sequential, Functional or Model and a \"config\"; "
                f"{found})",
            )
        where = find_code(doc)
        if where is not None:
            self.fail(key, f"{path}: refused because it carries Python code ({where}); "
                           "only plain Keras layers can be used")
        problem = _keras_cannot_load(doc)
        if problem is not None:
            self.fail(key, f"Keras cannot load {rel}: {problem}")
        return doc

    def search(self, value: Any) -> tuple[str, int, int | None, dict, dict | None]:
        s = {} if value is None else self.mapping(value, "search", _SEARCH_KEYS)
        method = s.get("method")
        method = "grid" if method is None else self.choice(method, "search.method", SEARCH_METHODS)
        seed = s.get("seed")
        seed = 0 if seed is None else self.int_(seed, "search.seed", minimum=0)
        samples = s.get("samples")
        search = search_class(method)
        if search.takes_samples == "never":
            if samples is not None:
                self.fail("search.samples", "only used with search.method: random, asha or hyperband (a grid "
                                            "tries every combination)")
        elif search.takes_samples == "required" and samples is None:
            self.fail("search.samples", f"required with search.method: {method} ({search.samples_are})")
        if samples is not None:
            samples = self.int_(samples, "search.samples")
            if samples > MAX_MODELS:
                self.fail("search.samples", f"{samples} models is too many; the limit is {MAX_MODELS}")
        stopping = None
        if search.early_stopping:
            if s.get("max_epochs") is None:
                self.fail("search.max_epochs", f"required with search.method: {method} (it replaces epochs)")
            stopping = {"max_epochs": self.int_(s["max_epochs"], "search.max_epochs")}
            grace = s.get("grace_period")
            stopping["grace_period"] = 1 if grace is None else self.int_(grace, "search.grace_period")
            if stopping["grace_period"] >= stopping["max_epochs"]:  # a rung is a decision before the last epoch
                self.fail("search.grace_period", f"{stopping['grace_period']} is not below search.max_epochs "
                                                 f"({stopping['max_epochs']}): no rung to decide at, so no model "
                                                 "would ever be stopped (use method: grid for that)")
            factor = s.get("reduction_factor")
            stopping["reduction_factor"] = 3 if factor is None else self.int_(factor, "search.reduction_factor",
                                                                              minimum=2)
        else:
            for key in ("grace_period", "reduction_factor", "max_epochs"):
                if s.get(key) is not None:
                    self.fail(_join("search", key),
                              f"only used with search.method: {' or '.join(EARLY_STOPPING_METHODS)}")

        raw_space = s.get("space")
        raw_space = {} if raw_space is None else self.mapping(raw_space, "search.space", SPACE_KEYS)
        space: dict[str, list | _Range] = {}
        for name in SPACE_KEYS:
            if name in raw_space:
                space[name] = self.space_value(name, raw_space[name], samples is not None)
            elif name in DEFAULTS:
                space[name] = [DEFAULTS[name]]
        if "momentum" in space:
            opts = space["optimizer"]
            if not any(o in MOMENTUM_OPTIMIZERS for o in opts):
                self.fail("search.space.momentum",
                          "momentum is only used by sgd and rmsprop, and no optimizer in search.space.optimizer "
                          f"can use it (optimizers: {', '.join(opts)})")
        return method, seed, samples, space, stopping

    def space_value(self, name: str, value: Any, drawn: bool) -> list | _Range:
        key = _join("search.space", name)
        if isinstance(value, dict):
            if name == "optimizer":
                self.fail(key, "expected an optimizer name or a list of them, got a mapping")
            if not drawn:
                self.fail(key, "a range {low, high} needs search.method: random (or asha, hyperband with "
                               "samples); a grid needs a list of values")
            return self.range_(name, value, key)
        items = value if isinstance(value, list) else [value]
        if not items:
            self.fail(key, "empty grid: the list of values is empty")
        out: list = []
        for i, item in enumerate(items):
            ikey = _index(key, i) if isinstance(value, list) else key
            v = self.scalar(name, item, ikey)
            if v in out:
                self.fail(ikey, f"duplicate value {item!r}")
            out.append(v)
        return out

    def scalar(self, name: str, value: Any, key: str):
        if name == "optimizer":
            return self.choice(value, key, OPTIMIZERS)
        if name == "batch_size":
            return self.int_(value, key)
        if name == "learning_rate":
            v = self.number(value, key, "a learning rate > 0")
            if v <= 0:
                self.fail(key, f"expected a learning rate > 0, got {value!r}")
            return v
        v = self.number(value, key, "a momentum in [0, 1)")
        if not 0 <= v < 1:
            self.fail(key, f"expected a momentum in [0, 1), got {value!r}")
        return v

    def range_(self, name: str, value: dict, key: str) -> _Range:
        self.mapping(value, key, _RANGE_KEYS, required=("low", "high"))
        log = value.get("log")
        if log is None:
            log = False
        elif not isinstance(log, bool):
            self.fail(_join(key, "log"), f"expected true or false, got {_describe(log)}")
        ends = {}
        for end in ("low", "high"):
            ekey = _join(key, end)
            if name == "batch_size":
                ends[end] = self.int_(value[end], ekey)
            elif name == "learning_rate":
                ends[end] = self.number(value[end], ekey, "a learning rate > 0")
                if ends[end] <= 0:
                    self.fail(ekey, f"expected a learning rate > 0, got {value[end]!r}")
            else:
                ends[end] = self.scalar(name, value[end], ekey)
        low, high = ends["low"], ends["high"]
        if low > high:
            self.fail(key, f"low ({value['low']!r}) is greater than high ({value['high']!r})")
        if log and low <= 0:
            self.fail(_join(key, "low"), "a log-uniform range needs low > 0")
        return _Range(low=low, high=high, log=log, integer=(name == "batch_size"))


def _keras_cannot_load(doc: dict) -> str | None:
    """Deserialize a keras_json config exactly as the server will (Keras 3, safe mode) and say in
    one line why that fails, or None. Keras is imported here, lazily (about a second), so only
    configurations with keras_json models pay for it; a model the server could not build would
    otherwise abort the whole run at warm-up."""
    import warnings

    os.environ.setdefault("KERAS_BACKEND", "jax")  # as the server (ctq/indb.py import_keras)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import keras
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
        return f"Keras cannot be imported in the client to check it ({type(exc).__name__}: {exc})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keras.saving.deserialize_keras_object(doc, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises TypeError, ValueError, KeyError...
        return _keras_reason(exc, doc)
    return None


def _keras_reason(exc: Exception, doc: dict) -> str:
    """Keras nests its errors and appends whole configs: keep the innermost cause's first sentence."""
    text = str(exc).split("Exception encountered:")[-1]
    text = re.split(r"\s*(?:Full object config:|Make sure custom|Please ensure|\n)", text.strip(), maxsplit=1)[0]
    text = text.strip().rstrip(".") or type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    version = str(doc.get("keras_version", ""))
    if version.startswith(("1.", "2.")):
        text += f" (the file was saved by Keras {version}; re-save the model with Keras 3's model.to_json())"
    elif "locate class" in text or "Unknown " in text:
        text += " (custom or unregistered classes cannot be used: only built-in Keras layers)"
    return text


# --------------------------------------------------------------------------------------------
# Expansion
# --------------------------------------------------------------------------------------------


def _choices(spec) -> float:
    """How many values a space entry can take: a list's length, an integer range's width, else infinity."""
    if isinstance(spec, _Range):
        return int(spec.high - spec.low) + 1 if spec.integer else math.inf
    return len(spec)


def _combinations(space: dict) -> float:
    """Distinct hyper-parameter combinations of ``space`` per architecture (momentum counts only
    for the optimizers that use it); infinity once a range is continuous."""
    moms = space.get("momentum")
    return _choices(space["learning_rate"]) * _choices(space["batch_size"]) * sum(
        _choices(moms) if moms and o in MOMENTUM_OPTIMIZERS else 1 for o in space["optimizer"])


def model_seed(seed: int, model_id: int) -> int:
    """The weight-initialisation seed of model ``model_id`` of a search seeded by ``seed``."""
    digest = hashlib.sha256(f"ctq-model-seed:{seed}:{model_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def model_name(arch: str, opt: str, lr: float, bs: int, mom: float | None) -> str:
    """A model's display name, e.g. ``mlp-small/adam/lr=0.001/bs=64``."""
    name = f"{arch}/{opt}/lr={_fmt(lr)}/bs={bs}"
    return name if mom is None else f"{name}/mom={_fmt(mom)}"


def _number_models(points: list[tuple], seed: int) -> list[ModelConfig]:
    names = [model_name(arch.name, opt, lr, bs, mom) for arch, opt, lr, bs, mom in points]
    counts: dict[str, int] = {}
    taken = set(names)
    unique = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        if counts[name] == 1:
            unique.append(name)
            continue
        k = counts[name]
        while f"{name}#{k}" in taken:
            k += 1
        counts[name] = k
        taken.add(f"{name}#{k}")
        unique.append(f"{name}#{k}")
    return [
        ModelConfig(
            model_id=i, name=name, architecture=arch, optimizer=opt, learning_rate=float(lr),
            batch_size=int(bs), momentum=None if mom is None else float(mom), seed=model_seed(seed, i),
        )
        for i, (name, (arch, opt, lr, bs, mom)) in enumerate(zip(unique, points), start=1)
    ]


def _space_json(space: dict) -> dict:
    out = {}
    for k, v in space.items():
        if isinstance(v, _Range):
            out[k] = {"low": v.low, "high": v.high, "log": v.log}
        else:
            out[k] = list(v)
    return out

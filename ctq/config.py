"""Load, validate and expand a ``grid.yaml`` run configuration (no database; Keras only for keras_json).

``ctq train grid.yaml`` reads one YAML file that says which table to learn from, which Keras
architectures to try, which hyper-parameters to search over, and how to rank the results.
:func:`load_config` turns it into a frozen :class:`RunConfig` whose ``models`` tuple is the expanded
search: one :class:`ModelConfig` per (architecture, hyper-parameters) point, numbered 1..M. The keys,
their value limits and the rules between them are pydantic models (:class:`Grid` and its sections),
whose JSON Schema ``ctq schema`` prints (:func:`grid_json_schema`).

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
                                    #   training (2.6 x its state, + the cached data)
                                    #   would not fit is refused (exit 2). Default:
                                    #   the server's memory shared by the segments on its host (no
                                    #   streaming then)
    checkpoint_minutes: 5           # optional number >= 0: a model's state after an epoch is stored
                                    #   durably (a checkpoint) when its last checkpoint is this old;
                                    #   in between, hops store it without WAL (fast) and a crash that
                                    #   takes it (of the host; on Greenplum and Citus, of the server)
                                    #   sends the model back to its checkpoint. 0: every epoch. Its
                                    #   last epoch, and every epoch under asha/hyperband, always are.
    retries: 5                      # optional int 0-100: times a hop (or a write to the catalog) is
                                    #   tried again after a lost connection, a terminated backend or
                                    #   a server restart, 0.5 s later, then doubling up to 8 s apart;
                                    #   then the run stops (exit 3) and resumes later. 5 waits out
                                    #   about 2 minutes of a server down; more for a longer failover
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
(:class:`ctq.search.tpe.Tpe`). Samples are distinct configurations (a draw that repeats one is
drawn again); more ``samples`` than a finite space has is refused.

Optional keys may also be written as ``null``, which means "use the default". Every problem is a
:class:`~ctq.errors.ConfigError` (exit code 2) naming the file and the key path, for example
``grid.yaml:models[1].layers[0].dense: expected a positive integer, got 'abc'``. Unknown keys get a
"did you mean" suggestion. Besides YAML 1.1, floats such as ``1e-3`` are read as numbers and dates
stay strings; duplicate keys in a mapping are an error.
"""


from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    BaseModel,
        ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from ctq.errors import ConfigError
from ctq.metrics import MAE_METRICS, MAX_METRICS, METRICS, Metric
from ctq.rules import ACTIVATIONS, DEFAULTS, MOMENTUM_OPTIMIZERS, OPTIMIZERS, Hyperparameters, find_code
from ctq.scheduler import SCHEDULING_RULES
from ctq.search import METHODS, search_class
from ctq.search.base import MAX_MODELS

__all__ = [
    "DataConfig",
    "Architecture",
    "ModelConfig",
    "RunConfig",
    "Grid",
    "load_config",
    "parse_config",
    "grid_json_schema",
    "fingerprint",
    "parse_table_name",
    "MAX_MODELS",
]

MAX_SEGMENTS = 256
MAX_RETRIES = 100  # grid.yaml retries: beyond, a server away for hours; resume it instead (cron)
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
ALL_FEATURES = "all"  # data.features: every column of the table but the label and data.exclude


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

    def hyperparameters(self) -> Hyperparameters:
        """``momentum`` is None where the optimizer does not use it."""
        return Hyperparameters(self.optimizer, self.learning_rate, self.batch_size, self.momentum)


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
    retries: int | None = None  # None: ctq.coordinator.DEFAULT_RETRIES
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
    if doc is None:
        raise ConfigError("the file is empty; expected a mapping with keys data, models, epochs", path=source_path)
    try:
        grid = Grid.model_validate(doc)
    except ValidationError as exc:
        raise _config_error(exc, doc, source_path) from None
    return _run_config(grid, doc, source_path, os.getcwd() if base_dir is None else base_dir)


def effective(raw: dict) -> dict:
    """A run's recorded configuration (``ctq.runs.config``) with every default filled in, as the
    run used it: a default spelled out in one grid file and left out of another is no difference
    between two runs (ctq compare). The record as it is when it no longer validates (an older
    ctq's)."""
    doc = {key: value for key, value in raw.items() if key != "resolved"}  # (ctq's own, see api.train)
    try:
        return Grid.model_validate(doc).model_dump(mode="json", warnings=False)
    except ValidationError:
        return raw


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
            [m.model_id, m.name, m.architecture.name, m.hyperparameters().as_dict(), m.seed] for m in config.models
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
# The file's schema: pydantic models. The value limits live here; ``ctq schema`` is their JSON
# Schema (:func:`grid_json_schema`), and the error messages read it too (:func:`_config_error`).
# --------------------------------------------------------------------------------------------


def _fail(message: str, *at: str | int) -> PydanticCustomError:
    """A rule's error, at the key path ``at`` below the value whose validator raises it."""
    return PydanticCustomError("ctq", "{message}", {"message": message, "at": at})


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _choice(values) -> Any:
    """One of ``values``, in any case (``Random`` is ``random``)."""
    return Annotated[Literal[tuple(values)], BeforeValidator(_lower)]


def control_character(text: str) -> str | None:
    """The first control character of ``text`` (a terminal escape starts with one), or None."""
    return next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Cs")), None)


MAX_RUN_NAME = 200  # characters: a name is shown in every listing, and matched by ctq runs --name


def run_name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as a run's name (grid.yaml's name, ``--name``), or None."""
    if (bad := control_character(name)) is not None:  # ctq runs prints it
        return f"contains a control character {bad!r}: {name!r}"
    if not name.strip():
        return "is blank"
    if len(name) > MAX_RUN_NAME:
        return f"is {len(name)} characters long; at most {MAX_RUN_NAME}"
    return None


def _run_name(name: str) -> str:
    if (problem := run_name_problem(name)) is not None:
        raise _fail(problem)
    return name


def _printable(text: str) -> str:
    bad = control_character(text)
    if bad is not None:
        raise _fail(f"contains a control character {bad!r}: {text!r}")
    return text


def _text(title: str | None = None, description: str | None = None) -> Any:
    """A non-empty string without control characters; ``title`` names it in messages."""
    return Annotated[str, Field(min_length=1, title=title, description=description), AfterValidator(_printable)]


def _model_name(text: str) -> str:
    """A model's name: its leaderboard name is name/optimizer/lr=.../bs=... (config.model_name), so
    a '/' in it could read as, or even equal, another model's name."""
    if "/" in text:
        raise _fail(f"contains '/', which separates a model's name from its hyper-parameters in its "
                    f"leaderboard name (name/optimizer/lr=.../bs=...): {text!r}")
    return text


def _either(pick, *choices, error: str | None = None) -> Any:
    """A union whose branch is ``choices[pick(value)]``; ``pick`` returning None is an error of
    type ``error``. Its pydantic tags are "#<position>", which :func:`_locate` follows into the
    JSON Schema's ``oneOf``."""
    return Annotated[Union[tuple(Annotated[t, Tag(f"#{i}")] for i, t in enumerate(choices))],
                     Discriminator(lambda value: None if (i := pick(value)) is None else f"#{i}",
                                   custom_error_type=error, custom_error_message=error)]


def _distinct(values: list) -> list:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise _fail(f"duplicate value {value!r}", i)
    return values


INT_MAX = 2**31 - 1  # the catalog keeps these in integer columns (a run created, then refused there)
Positive = Annotated[int, Field(ge=1, le=INT_MAX)]
NonNegative = Annotated[int, Field(ge=0, le=INT_MAX)]
Column = _text("column name")
LearningRate = Annotated[float, Field(gt=0, title="learning rate")]
Momentum = Annotated[float, Field(ge=0, lt=1, title="momentum")]


def _nullable_optionals(schema: dict, cls: type) -> None:
    """JSON Schema of a section: its optional keys may be null (= the default), and its
    ``schema_rules`` (what the keys say together) are added."""
    required = set(schema.get("required", ()))
    for key, prop in schema.get("properties", {}).items():
        if key in required or {"type": "null"} in prop.get("anyOf", ()):
            continue
        notes = {k: prop.pop(k) for k in ("default", "description", "title") if k in prop}
        schema["properties"][key] = {"anyOf": [prop, {"type": "null"}], **notes}
    schema.update(cls.schema_rules)


class _Section(BaseModel):
    """A mapping of grid.yaml: known keys only, no type coercion (``"3"`` is not 3), finite numbers;
    a key written as null takes its default."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              json_schema_extra=_nullable_optionals)
    schema_rules: ClassVar[dict] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items()
                if v is not None or k not in cls.model_fields or cls.model_fields[k].is_required()}


# -- layers: exactly one kind key per entry (the discriminator) --------------------------------


class Dense(_Section):
    """A Dense layer: {dense: <units>, activation, l2}."""

    dense: Positive
    activation: _choice(ACTIVATIONS) = "relu"
    l2: Annotated[float, Field(ge=0)] = 0.0

    def spec(self) -> dict:
        return {"type": "dense", "units": self.dense, "activation": self.activation, "l2": self.l2}


class Dropout(_Section):
    """A Dropout layer: {dropout: <rate>}."""

    dropout: Annotated[float, Field(ge=0, lt=1, title="rate")]

    def spec(self) -> dict:
        return {"type": "dropout", "rate": self.dropout}


class BatchNorm(_Section):
    """A BatchNormalization layer: {batch_norm: true}."""

    batch_norm: Literal[True]

    def spec(self) -> dict:
        return {"type": "batch_norm"}


_LAYERS = (Dense, Dropout, BatchNorm)
LAYER_KINDS = tuple(next(iter(cls.model_fields)) for cls in _LAYERS)  # a layer's kind is its first key


def _layer_kind(value: Any) -> int | None:
    kinds = [k for k in LAYER_KINDS if k in value] if isinstance(value, dict) else []
    return LAYER_KINDS.index(kinds[0]) if len(kinds) == 1 else None


Layer = _either(_layer_kind, *_LAYERS, error="layer_kind")  # (its messages: _config_error)


# -- data ---------------------------------------------------------------------------------------


class Categorical(_Section):
    """A categorical column: one_hot (one input per value) or index (1..V, for an Embedding)."""

    column: Column
    encoding: _choice(ENCODINGS)


class Data(_Section):
    """The table to learn from, its features and label, and the task."""

    table: _text("table name", "table or schema.table")
    features: _either(lambda v: int(v == ALL_FEATURES),
                      Annotated[list[_either(lambda v: int(isinstance(v, dict)), Column, Categorical)],
                                Field(min_length=1)],
                      Literal[ALL_FEATURES]) = Field(
        title="list of column names, or all (every column but the label and data.exclude)",
        description="numeric columns, {column, encoding} categorical ones, or all: every column but the "
                    "label and data.exclude")
    label: Column
    task: _choice(TASKS)
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    buffer_rows: Positive | None = None
    class_weight: _choice(CLASS_WEIGHTS) | None = None
    feature_shape: Annotated[list[Positive], Field(min_length=1, title="list of positive integers such as [28, 28, 1]",
                                                   description="the shape of a single array feature's rows, "
                                                               "e.g. [28, 28, 1]")] | None = None
    exclude: Annotated[list[Column], Field(title="list of column names",
                                           description="with features: all, the columns that are not "
                                                       "features")] | None = None

    @field_validator("table")
    @classmethod
    def _table_name(cls, table: str) -> str:
        try:
            parse_table_name(table)
        except ValueError as exc:
            raise _fail(f"invalid table name {table!r}: {exc}") from None
        return table

    @property
    def columns(self) -> list[str]:
        """The feature columns as listed (none for ``all``)."""
        return [] if self.features == ALL_FEATURES else [f if isinstance(f, str) else f.column for f in self.features]

    @property
    def encodings(self) -> list[tuple[str, str]]:
        """(column, "one_hot" | "index") of the categorical features, in order."""
        return [] if self.features == ALL_FEATURES else [(f.column, f.encoding) for f in self.features
                                                         if isinstance(f, Categorical)]

    @model_validator(mode="after")
    def _rules(self) -> Data:
        all_features = self.features == ALL_FEATURES
        if self.exclude is not None and not all_features:
            raise _fail(f"only with data.features: {ALL_FEATURES} (a listed set of features excludes the rest "
                        "already)", "exclude")
        columns = self.columns
        for i, column in enumerate(columns):
            if column in columns[:i]:
                raise _fail(f"duplicate column {column!r}", "features", i)
        if any(e == "index" for _, e in self.encodings) and len(self.encodings) < len(columns):
            raise _fail("with encoding: index, every feature must be index-encoded (the model's input is then one "
                        "integer index per feature, for an Embedding layer); use encoding: one_hot to mix "
                        "categorical and numeric features", "features")
        if self.feature_shape is not None and (len(columns) != 1 or self.encodings or all_features):
            raise _fail("needs exactly one feature, a real[]/float8[] column whose arrays are reshaped to it",
                        "feature_shape")
        if self.label in columns:
            raise _fail(f"the label {self.label!r} is also listed in data.features", "label")
        if self.class_weight is not None and self.task != "classification":
            raise _fail("class weights need task: classification", "class_weight")
        return self

    def config(self) -> DataConfig:
        """The public result (the table name split into schema and name)."""
        schema, name = parse_table_name(self.table)
        return DataConfig(
            table=self.table, schema=schema, name=name, features=tuple(self.columns), label=self.label,
            task=self.task, validation_fraction=self.validation_fraction, buffer_rows=self.buffer_rows,
            class_weight=self.class_weight, encodings=tuple(self.encodings),
            feature_shape=None if self.feature_shape is None else tuple(self.feature_shape),
            all_features=self.features == ALL_FEATURES, exclude=tuple(self.exclude or ()),
        )


# -- models ---------------------------------------------------------------------------------------


class ArchitectureEntry(_Section):
    """An architecture: inline layers or a keras_json file (exactly one)."""

    schema_rules: ClassVar[dict] = {"oneOf": [{"required": ["layers"]}, {"required": ["keras_json"]}]}

    name: Annotated[_text(), AfterValidator(_model_name)] | None = None
    layers: Annotated[list[Layer], Field(title="list of layers")] | None = None
    keras_json: _text("path to a Keras model JSON file", "path of a Model.to_json() file") | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ArchitectureEntry:
        if (self.layers is None) == (self.keras_json is None):
            raise _fail("each model needs exactly one of 'layers' or 'keras_json'"
                        + (" (neither given)" if self.layers is None else " (both given)"))
        return self

    def display_name(self, position: int) -> str:
        """The name, or its default: the keras_json file's stem, else model<position + 1>."""
        if self.name is not None:
            return self.name
        return Path(self.keras_json).stem if self.keras_json is not None else f"model{position + 1}"


# -- search -------------------------------------------------------------------------------------


class _Range(_Section):
    """Random search: uniform (or log-uniform with log: true) on [low, high]."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.low > self.high:
            raise _fail(f"low ({self.low!r}) is greater than high ({self.high!r})")
        if self.log and self.low <= 0:
            raise _fail("a log-uniform range needs low > 0", "low")
        return self


class LearningRateRange(_Range):
    """A learning_rate range."""

    low: LearningRate
    high: LearningRate


class BatchSizeRange(_Range):
    """A batch_size range (integers)."""

    low: Positive
    high: Positive


class MomentumRange(_Range):
    """A momentum range."""

    low: Momentum
    high: Momentum


def _space(scalar: Any, range_: type | None = None, title: str = "list of values (an empty grid tries no model)"):
    """A search-space entry: a scalar (a one-value list), a list of distinct values, or (with
    ``range_``) a range; a scalar comes out as a one-value list."""
    values = Annotated[list[scalar], Field(min_length=1, title=title), AfterValidator(_distinct)]
    if range_ is None:  # (a mapping is a wrong list)
        kind = _either(lambda v: int(isinstance(v, (list, dict))), scalar, values)
    else:
        kind = _either(lambda v: 2 if isinstance(v, dict) else int(isinstance(v, list)), scalar, values, range_)
    return Annotated[kind, AfterValidator(lambda v: v if isinstance(v, (list, _Range)) else [v])]


class Space(_Section):
    """The hyper-parameters searched over; a scalar is a one-value list."""

    optimizer: _space(_choice(OPTIMIZERS), title="list of optimizer names") = [DEFAULTS["optimizer"]]
    learning_rate: _space(LearningRate, LearningRateRange) = [DEFAULTS["learning_rate"]]
    batch_size: _space(Positive, BatchSizeRange) = [DEFAULTS["batch_size"]]
    momentum: _space(Momentum, MomentumRange) | None = Field(None, description="sgd and rmsprop only")

    @model_validator(mode="after")
    def _momentum_is_used(self) -> Space:
        if self.momentum is not None and not any(o in MOMENTUM_OPTIMIZERS for o in self.optimizer):
            raise _fail("momentum is only used by sgd and rmsprop, and no optimizer in search.space.optimizer "
                        f"can use it (optimizers: {', '.join(self.optimizer)})", "momentum")
        return self

    def as_json(self) -> dict:
        """``{key: [values] or {"low", "high", "log"}}`` in SPACE_KEYS order, momentum only if given."""
        return {key: value.model_dump(include={"low", "high", "log"}) if isinstance(value, _Range) else list(value)
                for key in SPACE_KEYS if (value := getattr(self, key)) is not None}


class Search(_Section):
    """How the hyper-parameter points are chosen (and, for asha and hyperband, stopped)."""

    method: _choice(SEARCH_METHODS) = "grid"
    seed: NonNegative = 0
    samples: Annotated[int, Field(ge=1, le=MAX_MODELS)] | None = None
    space: Space = Field(default_factory=Space)
    grace_period: Positive = Field(1, description="asha, hyperband: epochs before the first rung")
    reduction_factor: Annotated[int, Field(ge=2, le=INT_MAX)] = Field(3, description="asha, hyperband: 1 in this many promoted")
    max_epochs: Positive | None = Field(None, description="asha, hyperband: epochs of a model that is never stopped")

    @model_validator(mode="after")
    def _rules(self) -> Search:
        search = search_class(self.method)
        if search.takes_samples == "never" and self.samples is not None:
            drawn = [m for m in SEARCH_METHODS if search_class(m).takes_samples != "never"]
            raise _fail(f"only used with search.method: {', '.join(drawn[:-1])} or {drawn[-1]} (a grid tries every "
                        "combination)", "samples")
        if search.takes_samples == "required" and self.samples is None:
            raise _fail(f"required with search.method: {self.method} ({search.samples_are})", "samples")
        if search.early_stopping:
            if self.max_epochs is None:
                raise _fail(f"required with search.method: {self.method} (it replaces epochs)", "max_epochs")
            if self.grace_period >= self.max_epochs:  # a rung is a decision before the last epoch
                raise _fail(f"{self.grace_period} is not below search.max_epochs ({self.max_epochs}): no rung to "
                            "decide at, so no model would ever be stopped (use method: grid for that)", "grace_period")
        else:
            for key in ("grace_period", "reduction_factor", "max_epochs"):
                if key in self.model_fields_set:
                    raise _fail(f"only used with search.method: {' or '.join(EARLY_STOPPING_METHODS)}", key)
        for key in SPACE_KEYS:
            if self.samples is None and isinstance(getattr(self.space, key), _Range):
                raise _fail("a range {low, high} needs search.method: random (or asha, hyperband with samples); "
                            "a grid needs a list of values", "space", key)
        return self

    @property
    def early_stopping(self) -> dict | None:
        """{"max_epochs", "grace_period", "reduction_factor"} for asha and hyperband, else None."""
        if not search_class(self.method).early_stopping:
            return None
        return {"max_epochs": self.max_epochs, "grace_period": self.grace_period,
                "reduction_factor": self.reduction_factor}


# -- the file -------------------------------------------------------------------------------------


class Grid(_Section):
    """A ctq run configuration: the table, the models, the search, the ranking metric (reference:
    ctq/config.py; ctq train checks more than this schema can say: the keras_json files)."""

    model_config = ConfigDict(title="ctq grid.yaml")
    # epochs, unless successive halving's search.max_epochs (asha, hyperband) says how far a model trains
    schema_rules: ClassVar[dict] = {"anyOf": [
        {"required": ["epochs"]},
        {"required": ["search"], "properties": {"search": {
            "required": ["method", "max_epochs"], "properties": {"method": {"enum": list(EARLY_STOPPING_METHODS)}}}}},
    ]}

    name: Annotated[str, Field(min_length=1), AfterValidator(_run_name)] | None = None
    data: Data
    segments: Annotated[int, Field(ge=1, le=MAX_SEGMENTS)] | None = None
    cores_per_segment: Positive | None = None
    memory_budget_mb: Positive | None = Field(None, description="per segment; over it a segment streams its buffers")
    checkpoint_minutes: Annotated[float, Field(ge=0, title="number of minutes")] | None = Field(
        None, description="a model's state is checkpointed at an epoch's end once its last checkpoint is this old "
                          "(0: every epoch); default 5")
    retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = Field(
        None, description="times a hop is tried again after a lost connection, a terminated backend or a server "
                          "restart (0.5 s, then doubling up to 8 s apart) before the run stops with exit 3; default 5")
    models: Annotated[list[ArchitectureEntry], Field(min_length=1, title="list of architectures")]
    search: Search = Field(default_factory=Search)
    epochs: Positive | None = None
    metric: _choice(METRICS) = "val_loss"
    scheduling: _choice(SCHEDULING_RULES) = "cost"
    warm_start: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = Field(  # ctq.runs.run_id is a bigint
        None, description="a run id: each model starts from that run's final weights")

    @model_validator(mode="after")
    def _rules(self) -> Grid:
        task = self.data.task
        if self.metric in MAX_METRICS and task != "classification":
            raise _fail(f"{self.metric} needs data.task: classification (this task is {task})", "metric")
        if self.metric in MAE_METRICS and task != "regression":
            raise _fail(f"{self.metric} needs data.task: regression (this task is {task})", "metric")
        if self.metric.startswith("val_") and self.data.validation_fraction <= 0:
            raise _fail(f"must be > 0 when the metric is {self.metric} (it needs a validation set); use a training "
                        "metric (loss, accuracy, mae) or a fraction such as 0.2", "data", "validation_fraction")
        names: dict[str, int] = {}
        for i, model in enumerate(self.models):
            name = model.display_name(i)
            if name in names:
                raise _fail(f"duplicate model name {name!r} (also models[{names[name]}])", "models", i, "name")
            names[name] = i
        if any(e == "index" for _, e in self.data.encodings):
            for i, model in enumerate(self.models):
                if model.layers is not None:
                    raise _fail(f"model {model.display_name(i)!r} uses layers:, but the features are index-encoded "
                                "(integer indices for an Embedding): use a keras_json model that starts with an "
                                "Embedding, or encoding: one_hot", "models", i)
        method = self.search.method
        if self.search.early_stopping is not None:
            if self.epochs is not None:
                raise _fail(f"search.method: {method} trains up to search.max_epochs; remove epochs", "epochs")
        elif self.epochs is None:
            raise _fail("required key is missing", "epochs")
        samples = self.search.samples
        if samples is not None:  # drawn (random, asha, hyperband) or asked (tpe): each distinct
            per_model = _combinations(self.search.space.as_json())
            size = len(self.models) * per_model
            if samples > size:
                raise _fail(f"{samples} models, but search.space has only {size} distinct configurations "
                            f"({len(self.models)} architecture(s) x {per_model} hyper-parameter combinations): "
                            f"{samples - size} would repeat one; use samples: {size}, or method: grid",
                            "search", "samples")
        return self


class _Titled(GenerateJsonSchema):
    """Field titles only where set (they name a value in messages), not one made from each key."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


@functools.cache
def grid_json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of grid.yaml, from :class:`Grid` (``ctq schema`` prints it)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **Grid.model_json_schema(schema_generator=_Titled)}


# --------------------------------------------------------------------------------------------
# Messages: pydantic's first error, as one line naming the key path (ctq.errors.ConfigError)
# --------------------------------------------------------------------------------------------


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


def _unknown(word: Any, allowed, what: str = "key") -> str:
    return f"unknown {what} {str(word)!r}" + (_suggest(word, allowed) or f" (allowed: {', '.join(allowed)})")


def resolve_node(node: dict, defs: dict) -> dict:
    """``node`` with its $ref followed and an optional value's null branch dropped (the outer
    node's title and notes stay unless the inner one has its own)."""
    while True:
        if "$ref" in node:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = {**rest, **defs[node["$ref"].rsplit("/", 1)[-1]]}
        elif "anyOf" in node and {"type": "null"} in node["anyOf"] and len(node["anyOf"]) == 2:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**rest, **next(b for b in node["anyOf"] if b != {"type": "null"})}
        else:
            return node


def _locate(loc: tuple, doc: Any) -> tuple[str, dict, dict]:
    """The key path (``models[1].layers[0].dense``), the JSON Schema node and the node of the
    enclosing mapping of the value at pydantic's error location ``loc`` in the parsed file ``doc``
    (a "#<i>" step is a union's branch, see :func:`_either`)."""
    schema = grid_json_schema()
    defs = schema.get("$defs", {})
    node, parent, value, key = schema, schema, doc, ""
    for step in loc:
        node = resolve_node(node, defs)
        if "oneOf" in node and "properties" not in node:  # a union (_either)
            branches = [resolve_node(b, defs) for b in node["oneOf"]]
            rest = {k: v for k, v in node.items() if k != "oneOf"}
            if isinstance(step, str) and re.fullmatch(r"#\d+", step):  # pydantic's tag: the branch it tried
                node = {**rest, **branches[int(step[1:])]}
                continue
            # a rule's key path (_fail) names no tag: the branch that has the step
            node = {**rest, **next((b for b in branches if ("items" in b if isinstance(step, int)
                                                             else step in b.get("properties", {}))), {})}
        if isinstance(step, int) and isinstance(value, list):
            node, key, value = node.get("items", {}), f"{key}[{step}]", value[step] if step < len(value) else None
        else:  # a key (an int one too: YAML's 1: x)
            parent, node = node, node.get("properties", {}).get(step, {})
            key = f"{key}.{step}" if key else str(step)
            value = value.get(step) if isinstance(value, dict) else None
    return key, resolve_node(node, defs), parent


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _expected(node: dict) -> str:
    """What a JSON Schema node accepts, in words: "a positive integer", "a learning rate > 0",
    "a number in [0, 1)", "a non-empty list of column names"..."""
    title, kind = node.get("title"), node.get("type")
    if "enum" in node:
        return f"one of {', '.join(map(str, node['enum']))}"
    if "const" in node:
        return _describe(node["const"])
    if kind == "object":
        return "a mapping"
    if kind == "boolean":
        return "true or false"
    if kind == "integer":
        low = node.get("minimum")
        return {0: "a non-negative integer", 1: "a positive integer", None: "an integer"}.get(low, f"an integer >= {low}")
    if kind == "number":
        low = node.get("minimum", node.get("exclusiveMinimum"))
        high = node.get("maximum", node.get("exclusiveMaximum"))
        noun = _a(title or "number")
        if low is not None and high is not None:
            return (f"{noun} in {'[' if 'minimum' in node else '('}{low}, {high}"
                    f"{']' if 'maximum' in node else ')'}")
        if low is not None:
            return f"{noun} {'>=' if 'minimum' in node else '>'} {low}"
        return noun
    if kind == "string":
        return _a(title) if title else "a non-empty string"
    if kind == "array" or "minItems" in node:
        return f"{'a non-empty' if node.get('minItems') else 'a'} {title or 'list'}"
    return "a valid value"


def _config_error(exc: ValidationError, doc: Any, source: str) -> ConfigError:
    """pydantic's first error as ctq's one line: ``file:key.path: what is wrong``."""
    errors = exc.errors(include_url=False)
    error = errors[0]
    if error["type"] == "missing":  # a misspelt key beside it is the cause: say that, with its did-you-mean
        error = next((e for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == error["loc"][:-1]),
                     error)
    kind, value, loc = error["type"], error["input"], tuple(error["loc"])
    if kind == "ctq":
        loc += tuple(error["ctx"]["at"])
    key, node, parent = _locate(loc, doc)
    if kind == "ctq":
        message = error["ctx"]["message"]
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("extra_forbidden", "invalid_key"):  # (invalid_key: not a string)
        message = _unknown(loc[-1], tuple(parent.get("properties", ())))
    elif kind == "layer_kind":
        kinds = [k for k in LAYER_KINDS if k in value] if isinstance(value, dict) else []
        if not isinstance(value, dict):
            message = f"expected a layer mapping such as {{dense: 64}}, got {_describe(value)}"
        elif len(kinds) > 1:
            message = f"a layer has exactly one kind, got {' and '.join(kinds)}"
        elif value:
            unknown = next(iter(value))
            key, message = f"{key}.{unknown}", _unknown(unknown, LAYER_KINDS, "layer kind")
        else:
            message = f"empty layer; expected one of {', '.join(LAYER_KINDS)}"
    elif kind == "less_than_equal" and node.get("type") == "integer":
        message = f"must be at most {error['ctx']['le']}, got {_describe(value)}"
    else:
        message = f"expected {_expected(node)}, got {_describe(value)}"
        if kind == "literal_error":
            message += _suggest(value, node.get("enum", ()))
        elif kind == "list_type" and isinstance(value, str):
            message += " (write a single one as [name])"
    return ConfigError(message, path=source, key=key or None)


# --------------------------------------------------------------------------------------------
# From the validated file to the RunConfig
# --------------------------------------------------------------------------------------------


def _run_config(grid: Grid, doc: dict, source: str, base_dir: str) -> RunConfig:
    architectures = []
    for i, model in enumerate(grid.models):
        if model.layers is not None:
            spec = {"layers": [layer.spec() for layer in model.layers]}
        else:
            spec = {"keras_json": _keras_json(model.keras_json, base_dir, source, f"models[{i}].keras_json")}
        architectures.append(Architecture(name=model.display_name(i), spec=spec))
    search = grid.search
    space = search.space.as_json()
    try:
        points = search_class(search.method).initial_points(space, len(architectures), search.samples, search.seed,
                                                            MOMENTUM_OPTIMIZERS)
    except ValueError as exc:  # too many models
        raise ConfigError(str(exc), path=source, key="search.space") from None
    early_stopping = search.early_stopping
    return RunConfig(
        source_path=source,
        name=grid.name or ("run" if source.startswith("<") else (Path(source).stem or "run")),
        data=grid.data.config(),
        segments=grid.segments,
        cores_per_segment=grid.cores_per_segment,
        architectures=tuple(architectures),
        search_method=search.method,
        seed=search.seed,
        epochs=grid.epochs if early_stopping is None else early_stopping["max_epochs"],
        metric=grid.metric,
        models=tuple(_number_models([(architectures[a], *rest) for a, *rest in points], search.seed)),
        raw=json.loads(json.dumps(doc)),
        samples=search.samples,
        space=space,
        memory_budget_mb=grid.memory_budget_mb,
        checkpoint_minutes=grid.checkpoint_minutes,
        retries=grid.retries,
        early_stopping=early_stopping,
        scheduling=grid.scheduling,
        warm_start=grid.warm_start,
    )


def _keras_json(rel: str, base_dir: str, source: str, key: str) -> dict:
    """Read, check and parse a ``keras_json`` file (``rel``: as written, relative to ``base_dir``)."""

    def fail(message: str) -> ConfigError:
        return ConfigError(message, path=source, key=key)

    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(rel)))
    try:
        size = os.path.getsize(path)
        if size > MAX_KERAS_JSON_BYTES:
            raise fail(f"{path}: file is too large ({size} bytes; the limit is {MAX_KERAS_JSON_BYTES})")
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise fail(f"file not found: {path}") from None
    except IsADirectoryError:
        raise fail(f"is a directory, not a JSON file: {path}") from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise fail(f"{path}: not valid UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise fail(f"{path}: invalid JSON: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("class_name") not in KERAS_MODEL_CLASSES
        or not isinstance(doc.get("config"), dict)
    ):
        found = (f"found class_name {doc.get('class_name')!r}" if isinstance(doc, dict)
                 else f"the file holds {_describe(doc)}")
        raise fail(f"{path}: not a Keras model config (expected the output of Model.to_json(): a top-level "
                   f"\"class_name\" of Sequential, Functional or Model and a \"config\"; {found})")
    where = find_code(doc)
    if where is not None:
        raise fail(f"{path}: refused because it carries Python code ({where}); only plain Keras layers can be used")
    problem = _keras_cannot_load(doc)
    if problem is not None:
        raise fail(f"Keras cannot load {rel}: {problem}")
    return doc


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
    from ctq.indb import model_from_json  # the server's own way to build it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_from_json(keras, doc)
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


def _choices(key: str, spec: list | dict) -> float:
    """How many values a space entry (:meth:`Space.as_json`) can take: a list's length, an integer
    (batch_size) range's width, else infinity."""
    if isinstance(spec, dict):
        return int(spec["high"] - spec["low"]) + 1 if key == "batch_size" else math.inf
    return len(spec)


def _combinations(space: dict) -> float:
    """Distinct hyper-parameter combinations of ``space`` per architecture (momentum counts only
    for the optimizers that use it); infinity once a range is continuous."""
    moms = space.get("momentum")
    return _choices("learning_rate", space["learning_rate"]) * _choices("batch_size", space["batch_size"]) * sum(
        _choices("momentum", moms) if moms and o in MOMENTUM_OPTIMIZERS else 1 for o in space["optimizer"])


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


def _fmt(x: float) -> str:
    return format(x, ".4g")

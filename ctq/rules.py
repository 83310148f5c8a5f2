"""What the client and the server must decide alike, in one module both sides import.

The client (checking ``grid.yaml``) imports it as ``ctq.rules``; the server (building and training
the models) runs the copy ``ctq install`` stores beside the in-database module in
``ctq.server_code`` (sql_templates/common/bootstrap.py loads it first, as module ``ctq_rules``). So
an optimizer, an activation or a default accepted by one side is the other side's, and the scan that
refuses Keras configs carrying Python code is the same on both: the client's gives the early,
precise error, the server's guards the database against a caller that skips the client.
Standard library only: it runs inside the database's Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw", "adagrad", "nadam")
MOMENTUM_OPTIMIZERS = frozenset({"sgd", "rmsprop"})  # the optimizers that take a momentum
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "softplus", "swish", "leaky_relu", "linear")
#: a hyper-parameter a model leaves out (grid.yaml's search.space, a stored model's hyperparameters)
DEFAULTS = {"optimizer": "adam", "learning_rate": 0.001, "batch_size": 64}


@dataclass(frozen=True)
class Hyperparameters:
    """A model's hyper-parameters (ctq.models.hyperparameters, JSON): its optimizer (OPTIMIZERS),
    learning rate (the optimizer's starting step size), batch size (rows a training step takes)
    and momentum (None for an optimizer that takes none: MOMENTUM_OPTIMIZERS). A value a stored
    model leaves out, or stores as null, takes its default (DEFAULTS)."""

    optimizer: str = DEFAULTS["optimizer"]
    learning_rate: float = DEFAULTS["learning_rate"]
    batch_size: int = DEFAULTS["batch_size"]
    momentum: float | None = None

    @classmethod
    def of(cls, value: Hyperparameters | dict | None) -> Hyperparameters:
        """``value`` as Hyperparameters (a dict as the catalog stores it); TypeError for a key
        this version does not know."""
        if isinstance(value, cls):
            return value
        return cls(**{k: v for k, v in (value or {}).items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)

    def model_key(self) -> dict:
        """What a built and compiled Keras model depends on besides its architecture: one such
        model per backend serves every learning rate (a variable of the optimizer, set per
        model) and every batch size."""
        return {"optimizer": self.optimizer, "momentum": self.momentum}

    def step_key(self) -> dict:
        """What a compiled training step depends on: the model's key and the batch size (under
        jax a new batch shape is a new program)."""
        return {**self.model_key(), "batch_size": self.batch_size}


@dataclass(frozen=True)
class ModelSpec:
    """A model of a run (a ctq.models row): its name, architecture (indb.build_model's spec:
    ``{"layers": [...]}`` or ``{"keras_json": {...}}``), hyper-parameters and seed (its initial
    weights)."""

    name: str
    architecture: dict
    hyperparameters: Hyperparameters
    seed: int = 0

    @classmethod
    def from_row(cls, row) -> ModelSpec:
        """A ctq.models row (architecture and hyperparameters as JSON text)."""
        return cls(row["name"], json.loads(row["architecture"]),
                   Hyperparameters.of(json.loads(row["hyperparameters"])), row["seed"])

    def step_key(self) -> str:
        """The models that share compiled training steps share this key (JSON): the warm-up
        compiles and times each such group once (:meth:`Hyperparameters.step_key`)."""
        return json.dumps([self.architecture, self.hyperparameters.step_key()], sort_keys=True)


#: the kinds of a run's metric (grid.yaml ``metric`` without ``val_``) a model is compiled with as
#: such, for classification; any other metric is computed as accuracy or mae (:func:`compiled_metric`)
RANKING_KINDS = ("auc", "f1", "precision", "recall")


def compiled_metric(task: str, kind: str | None = None) -> str:
    """The metric a model of a ``task`` run is compiled with, which the hops record as train_metric
    and val_metric, for the run's metric ``kind``: the kind itself when it is a ranking kind and the
    task is classification, else accuracy (classification) or mae (regression)."""
    if task != "classification":
        return "mae"
    return kind if kind in RANKING_KINDS else "accuracy"

# -- What the client asks of the server ---------------------------------------------------------
# A targeted query carries its request as one JSON text (a bind parameter); both sides read and
# write it through these classes, so a field is named, typed and defaulted once.


@dataclass(frozen=True)
class PackStats:
    """What a pack records of its source (ctq.packs.stats, written by ctq.packing.pack_stats):
    what the server needs to decode, normalise and shape a buffer's rows and labels, and what the
    client needs to size a segment's data and to score new rows as the model was trained."""

    input_dim: int  # float32 values a row's features decode to
    n_outputs: int  # classes (classification) or 1 (regression)
    mean: list  # per feature value: what normalisation subtracts ...
    std: list  # ... and divides by
    rows: int = 0  # the source's rows: training + validation
    train_rows: int = 0
    validation_rows: int = 0
    segments: int = 1  # the segments the training rows are spread over
    class_values: list | None = None  # the label's classes, sorted (classification)
    class_counts: list | None = None  # training rows per class (class_weight: balanced)
    label_encoding: str = "value"  # "index": text classes, sent as their index in class_values
    label_type: str | None = None  # the label column's SQL type (ctq predict answers in it)
    x_layout: str = "float4"  # "array": one float4[] feature column (array_send), else float4send
    feature_shape: list | None = None  # an array feature's shape per row, e.g. [28, 28, 1]
    categories: dict | None = None  # column -> {"encoding", "values"}: encoded in SQL, not sent
    target_mean: float | None = None  # regression trains on standardised targets
    target_std: float | None = None
    # numeric feature columns and a regression target are packed less their mean, subtracted in
    # float8 before the float4 cast (packing.feature_bytes_sql), so that float32 keeps their spread
    # whatever their offset (a Unix time near 1.7e9: float32 steps of 128 s; found by a user
    # trial); the server's normalisation then only divides. False: packs of an earlier ctq, and an
    # array feature (packed as it is; its target is still centred where this is True)
    centred: bool = False
    source_as_of: str | None = None  # the moment the source was read (ISO 8601)

    @classmethod
    def from_dict(cls, recorded: dict) -> PackStats:
        """The statistics ctq.packs recorded; a key of an earlier ctq that no longer exists is
        left out (a pack outlives the version that made it)."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in recorded.items() if k in known})

    def as_dict(self) -> dict:
        return asdict(self)

    def for_server(self) -> PackStats:
        """Without the categorical vocabularies (up to 100,000 values a column): the server reads
        encoded buffers, only the SQL that encodes rows needs them (packing.feature_bytes_sql)."""
        return replace(self, categories=None)


class _Request:
    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str):
        """The request a JSON text holds; TypeError for a field this side does not know (a
        client and a server of different ctq versions)."""
        fields = json.loads(text)
        if "stats" in fields:
            fields["stats"] = PackStats(**fields["stats"])
        if fields.get("hyper") is not None:
            fields["hyper"] = Hyperparameters(**fields["hyper"])
        if fields.get("models") is not None:
            fields["models"] = [(arch, Hyperparameters(**hyper)) for arch, hyper in fields["models"]]
        return cls(**fields)


@dataclass(frozen=True)
class HopRequest(_Request):
    """A training query of one segment (indb.step_transition / step_final): the warm-up
    (``action`` "warmup": decode and cache the segment's data, build and compile ``models``) or a
    hop (``action`` "train": one sub-epoch of the model ``arch``/``hyper``/``seed``)."""

    action: str  # "warmup" or "train"
    pack_id: str
    task: str  # "classification" or "regression"
    stats: PackStats
    metric: str  # the kind of the run's metric (ctq.metrics.Metric.kind): what the models compile
    cores: list | None = None  # the CPU cores the backend's threads are pinned to
    stream: bool = False  # train buffer by buffer as rows arrive instead of from the cached data
    class_weights: list | None = None  # per class index
    models: list | None = None  # warm-up: [(arch, Hyperparameters), ...], one per compiled step
    arch: dict | None = None
    hyper: Hyperparameters | None = None
    seed: int = 0  # the model's initial weights (its first hop)
    evaluate: bool = False  # the last hop of an epoch: evaluate on the validation rows after it
    hops: int = 0  # hops the model's stored state has trained (MOP's invariant, checked on load)
    warm: bool = False  # the first hop of a warm-started model: load another run's weights only
    state_file: list | None = None  # [run, model] where working states are files (the hop reads it)


@dataclass(frozen=True)
class SizesRequest(_Request):
    """The memory check of one segment (indb.model_sizes): each model's state size."""

    models: list  # [(arch, Hyperparameters), ...]
    stats: PackStats
    task: str


@dataclass(frozen=True)
class ScoreRequest(_Request):
    """A scoring query of one segment (indb.score_final): ``ctq predict`` (``action`` "predict")
    or ``ctq evaluate`` ("evaluate") with one trained model."""

    segment: int
    task: str
    stats: PackStats
    arch: dict
    hyper: Hyperparameters
    action: str  # "predict" or "evaluate"
    proba: bool = False  # predict: every class's probability, not only the predicted class
    metric: str | None = None  # evaluate: the ranking kind to compute beside loss and accuracy/mae
    cores: list | None = None


# -- Keras configs that carry Python code ------------------------------------------------------
# Keras' safe mode is the second line; these are refused before Keras sees the config.

#: layer classes whose config holds Python code (marshalled bytecode or a function's source)
CODE_CARRYING_CLASSES = frozenset({"Lambda", "TFOpLambda"})
# Modules whose objects only ever appear in a model config to run Python code.
_CODE_MODULES = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "subprocess", "sys", "importlib", "shutil",
    "pickle", "marshal", "ctypes", "runpy", "pty", "socket", "code", "codeop", "types",
})
# Qualified names of code-running callables, anywhere inside a string.
_CODE_NAME_RE = re.compile(
    r"(?<![\w.])(?:os\.(?:system|popen|exec\w*|spawn\w*|fork\w*)|posix\.system|nt\.system"
    r"|subprocess\.\w+|builtins\.(?:eval|exec|compile|__import__|open)|importlib\.import_module)\b"
)
# Bare builtins: the whole string, or a call.
_CODE_CALL_RE = re.compile(r"^\s*(?:eval|exec|compile|__import__)\s*$|(?<![\w.])(?:eval|exec|__import__)\s*\(")


def find_code(doc: Any) -> str | None:
    """Describe the first code-carrying element of a Keras config (a layer class in
    CODE_CARRYING_CLASSES, a serialized lambda, an object from a code-running module, a string
    naming a code-running callable), with its path in the config; None if there is none."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        node, where = stack.pop()
        at = where or "the top level"
        if isinstance(node, dict):
            cls = node.get("class_name")
            if cls in CODE_CARRYING_CLASSES:
                return f"a {cls} layer at {at}"
            if cls == "__lambda__" or "__lambda__" in node:
                return f"a serialized lambda at {at}"
            if node.get("function_type") == "lambda":
                return f"a serialized lambda (function_type: lambda) at {at}"
            module = node.get("module")
            if isinstance(module, str) and module.split(".", 1)[0] in _CODE_MODULES:
                return f"an object from module {module!r} at {at}"
            for k, v in node.items():
                if isinstance(k, str) and _is_code_string(k):
                    return f"the key {k!r} at {at}"
                stack.append((v, f"{where}.{k}" if where else str(k)))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                stack.append((v, f"{where}[{i}]"))
        elif isinstance(node, str) and _is_code_string(node):
            shown = node if len(node) <= 40 else node[:37] + "..."
            return f"the string {shown!r} at {at}"
    return None


def _is_code_string(text: str) -> bool:
    return bool(_CODE_NAME_RE.search(text) or _CODE_CALL_RE.search(text))

"""The JSON Schema of ``grid.yaml``, generated from the validator's own tables (``ctq schema``).

Editors use it to complete and check a grid file as it is typed (see docs/grid-yaml.md, "Editor support").
The validator in :mod:`ctq.config` stays the authority: it gives the messages (file, key path,
"did you mean"), the cross-field rules (a metric that needs a task, momentum without an optimizer
that uses it, ``encoding: index`` only with keras_json models...) and reads the keras_json files,
none of which a schema can say. So that the two cannot drift, the schema takes every key set and
every enumeration from the validator's tables (``_TOP_KEYS``, ``METRICS``, ``OPTIMIZERS``...);
only the type of each key's value is described here, in ``_VALUES``, and a key the tables gain
without an entry there is still allowed (any value), never refused (tests/test_features.py checks
that every key has one).
"""

from __future__ import annotations

from ctq import config as c

_POSITIVE = {"type": "integer", "minimum": 1}


def _enum(values) -> dict:
    return {"enum": list(values)}


def _feature() -> dict:
    return {"anyOf": [
        {"type": "string", "minLength": 1, "description": "a numeric column (or a single real[]/float8[] column)"},
        _section(c._FEATURE_KEYS, "feature", required=("column", "encoding"),
                 description="a categorical column: one_hot (one input per value) or index (1..V, for an Embedding)"),
    ]}


def _layer(kind: str) -> dict:
    keys = (kind,) + c._LAYER_OPTIONS[kind]
    return _section(keys, "layer", required=(kind,), optional_null=False)


def _space_value(key: str) -> dict:
    scalar = _VALUES["space"][key]
    choices = [scalar, {"type": "array", "minItems": 1, "items": scalar}]
    if key != "optimizer":
        choices.append(_section(c._RANGE_KEYS, "range", required=("low", "high"),
                                description="random search: uniform (or log-uniform) on [low, high]"))
    return {"anyOf": choices}


# The value of each key, per section (the key sets themselves come from ctq.config's tables).
_VALUES: dict[str, dict] = {
    "top": {
        "name": {"type": "string", "minLength": 1},
        "data": lambda: _section(c._DATA_KEYS, "data", required=("table", "features", "label", "task")),
        "segments": {"type": "integer", "minimum": 1, "maximum": c.MAX_SEGMENTS},
        "cores_per_segment": _POSITIVE,
        "memory_budget_mb": {**_POSITIVE, "description": "per segment; over it a segment streams its buffers"},
        "checkpoint_minutes": {"type": "number", "minimum": 0,
                               "description": "a model's state is checkpointed at an epoch's end once its last "
                                              "checkpoint is this old (0: every epoch); default 5"},
        "models": lambda: {"type": "array", "minItems": 1, "items": {
            **_section(c._MODEL_KEYS, "model"),
            "oneOf": [{"required": ["layers"]}, {"required": ["keras_json"]}]}},
        "search": lambda: _section(c._SEARCH_KEYS, "search"),
        "epochs": _POSITIVE,
        "metric": _enum(c.METRICS),
        "scheduling": _enum(c.SCHEDULING_RULES),
        "warm_start": {**_POSITIVE, "description": "a run id: each model starts from that run's final weights"},
    },
    "data": {
        "table": {"type": "string", "minLength": 1, "description": "table or schema.table"},
        "features": lambda: {"anyOf": [{"type": "array", "minItems": 1, "items": _feature()},
                                       {"const": c.ALL_FEATURES, "description": "every column but the label "
                                        "and data.exclude"}]},
        "exclude": lambda: {"type": "array", "items": {"type": "string", "minLength": 1},
                            "description": "with features: all, the columns that are not features"},
        "label": {"type": "string", "minLength": 1},
        "task": _enum(c.TASKS),
        "validation_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "buffer_rows": _POSITIVE,
        "class_weight": _enum(c.CLASS_WEIGHTS),
        "feature_shape": {"type": "array", "minItems": 1, "items": _POSITIVE,
                          "description": "the shape of a single array feature's rows, e.g. [28, 28, 1]"},
    },
    "feature": {"column": {"type": "string", "minLength": 1}, "encoding": _enum(c.ENCODINGS)},
    "model": {
        "name": {"type": "string", "minLength": 1},
        "layers": lambda: {"type": "array", "items": {"anyOf": [_layer(k) for k in c._LAYER_KINDS]}},
        "keras_json": {"type": "string", "minLength": 1, "description": "path of a Model.to_json() file"},
    },
    "layer": {
        "dense": _POSITIVE,
        "activation": _enum(c.ACTIVATIONS),
        "l2": {"type": "number", "minimum": 0},
        "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "batch_norm": {"const": True},
    },
    "search": {
        "method": _enum(c.SEARCH_METHODS),
        "seed": {"type": "integer", "minimum": 0},
        "samples": {"type": "integer", "minimum": 1, "maximum": c.MAX_MODELS},
        "grace_period": {**_POSITIVE, "description": "asha, hyperband: epochs before the first rung"},
        "reduction_factor": {"type": "integer", "minimum": 2,
                             "description": "asha, hyperband: 1 in this many promoted"},
        "max_epochs": {**_POSITIVE, "description": "asha, hyperband: epochs of a model that is never stopped"},
        "space": lambda: {"type": "object", "additionalProperties": False,
                          "properties": {k: _space_value(k) for k in c.SPACE_KEYS}},
    },
    "space": {
        "optimizer": _enum(c.OPTIMIZERS),
        "learning_rate": {"type": "number", "exclusiveMinimum": 0},
        "batch_size": _POSITIVE,
        "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    },
    "range": {"low": {"type": "number"}, "high": {"type": "number"}, "log": {"type": "boolean"}},
}


def _section(keys, section: str, required=(), optional_null: bool = True, description: str | None = None) -> dict:
    """An object with exactly ``keys`` (a validator table); optional keys may be null (= default)."""
    properties = {}
    for key in keys:
        value = _VALUES.get(section, {}).get(key, {})
        value = value() if callable(value) else value
        if optional_null and key not in required and value:
            value = {"anyOf": [value, {"type": "null"}]}
        properties[key] = value
    out = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def grid_schema() -> dict:
    """The JSON Schema (draft 2020-12) of grid.yaml."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ctq grid.yaml",
        "description": "A ctq run configuration: the table, the models, the search, the ranking metric "
                       "(reference: ctq/config.py; ctq train checks more than this schema can say).",
        **_section(c._TOP_KEYS, "top", required=("data", "models")),
        # epochs, unless successive halving's search.max_epochs (asha, hyperband) says how far a model trains
        "anyOf": [{"required": ["epochs"]},
                  {"required": ["search"], "properties": {"search": {
                      "required": ["method", "max_epochs"],
                      "properties": {"method": _enum(c.EARLY_STOPPING_METHODS)}}}}],
    }


def undescribed_keys() -> list[str]:
    """Keys of the validator's tables that have no value description here (allowed as any value)."""
    tables = {"top": c._TOP_KEYS, "data": c._DATA_KEYS, "feature": c._FEATURE_KEYS, "model": c._MODEL_KEYS,
              "search": c._SEARCH_KEYS, "space": c.SPACE_KEYS, "range": c._RANGE_KEYS,
              "layer": tuple({k for kind in c._LAYER_KINDS for k in (kind,) + c._LAYER_OPTIONS[kind]})}
    return sorted(f"{section}.{key}" for section, keys in tables.items() for key in keys
                  if key not in _VALUES.get(section, {}))

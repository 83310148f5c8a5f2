"""Every keras_json model checked against the data before training (client side, no database).

A model whose output does not fit the task trains without error and can even rank first: one
sigmoid unit on a 2-class label under ctq's sparse categorical cross-entropy, two softmax units on
a 3-class label, a bounded output on standardised regression targets. ctq owns the loss (sparse
categorical cross-entropy on probabilities for classification, mean squared error on standardised
targets for regression), so it can say exactly what fits. Models written with ``layers:`` get
their input and output layers from ctq and always fit.
"""

from __future__ import annotations

import os

from ctq.errors import ConfigError

BOUNDED = {"sigmoid", "softmax", "tanh", "hard_sigmoid", "softsign", "relu", "relu6", "elu", "selu", "softplus",
           "exponential", "hard_tanh", "log_softmax"}


def output_activation(model) -> str:
    """Name of the activation the model's output passes through last ('linear' if none)."""
    for layer in reversed(model.layers):
        if type(layer).__name__ == "Softmax":
            return "softmax"
        activation = getattr(layer, "activation", None)
        if activation is not None:
            return getattr(activation, "__name__", str(activation))
        if type(layer).__name__ not in ("Dropout", "Reshape", "Flatten", "Identity"):
            return "linear"
    return "linear"


def check_models_fit(cfg, input_shape: tuple[int, ...], n_outputs: int, task: str,
                     index_size: int | None = None) -> None:
    """Refuse (ConfigError, exit 2, naming the model) a keras_json model whose input does not take
    examples of ``input_shape`` (the feature count, or ``data.feature_shape``), whose output does
    not fit ``task`` with ``n_outputs`` classes, or whose Embedding layers do not fit the features'
    encoding: index-encoded features (``index_size``: the largest vocabulary + 1) need an
    Embedding with at least that many rows (an index past its end would be clamped, silently, by
    jax), and an Embedding on numeric or one-hot features would read them as indices."""
    for arch in cfg.architectures:  # every model of the search is one of them (TPE's too)
        if "keras_json" not in arch.spec:
            continue
        misfit = _misfit(arch.spec["keras_json"], tuple(input_shape), n_outputs, task, index_size)
        if misfit:
            raise ConfigError(f"model {arch.name!r} (keras_json) does not fit the data: {misfit}",
                              path=cfg.source_path)


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _misfit(doc: dict, input_shape: tuple, n_outputs: int, task: str,
            index_size: int | None = None) -> str | None:
    os.environ.setdefault("KERAS_BACKEND", "jax")  # as the server (ctq/indb.py import_keras)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import keras

    from ctq.indb import model_from_json

    with keras.StatelessScope():  # shapes only, nothing allocated: the model may be larger than this machine
        model = model_from_json(keras, doc)
    inputs = [tuple(t.shape[1:]) for t in model.inputs]
    if inputs != [input_shape]:
        data = (f"{input_shape[0]} features per row" if len(input_shape) == 1
                else f"rows of shape {input_shape} (data.feature_shape)")
        return f"its input shape is {', '.join(map(str, inputs))}, the data has {data}"
    embeddings = [layer for layer in _layers(model) if type(layer).__name__ == "Embedding"]
    if index_size is None and embeddings:
        return ("it has an Embedding layer, but the features are not index-encoded; declare them "
                "{column: name, encoding: index} in data.features")
    if index_size is not None:
        if not embeddings:
            return ("the features are index-encoded (one integer index per feature) but the model has no "
                    "Embedding layer to take them")
        small = [layer for layer in embeddings if layer.input_dim < index_size]
        if small:
            return (f"its Embedding {small[0].name!r} has input_dim {small[0].input_dim}, the features' indices "
                    f"need {index_size} (the largest vocabulary + 1: index 0 is the unknown value)")
    units = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    activation = output_activation(model)
    if task == "classification":
        if units != n_outputs:
            return (f"its output has {units} unit(s), the label has {n_outputs} classes; end it in "
                    f"Dense({n_outputs}, activation='softmax') (ctq trains with sparse categorical cross-entropy)")
        if activation != "softmax":
            return (f"its output activation is {activation}, not softmax: ctq's loss expects class "
                    "probabilities (sparse categorical cross-entropy)")
    else:
        if units != 1:
            return f"its output has {units} unit(s); a regression model ends in Dense(1)"
        if activation in BOUNDED:
            return (f"its output activation is {activation}; ctq standardises regression targets (mean 0, "
                    "standard deviation 1), so the output must be linear")
    return None

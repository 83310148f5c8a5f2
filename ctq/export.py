"""``ctq export``: a trained model as a standard Keras file that stands alone.

The file is what ``keras.saving.load_model`` opens without ctq: a functional model whose input is
the raw feature values (in the order of the run's ``data.features``, or the array column's
elements) and whose output is what ``ctq predict`` computes in the database:

- first a ``keras.layers.Normalization`` layer (``ctq_normalization``) holding the mean and variance
  (std squared) of the training rows recorded with the pack, so the file needs no statistics beside it;
- then the trained model itself (its architecture from ``ctq.models.architecture``, its weights from
  its newest stored state, built by the same ``indb`` code as in the server);
- for regression, a ``keras.layers.Rescaling`` layer (``ctq_target_units``: ``y * target_std +
  target_mean``) that turns the model's standardised output into the target's own units.

A classifier outputs the class probabilities, in the order of ``ctq.packs.stats.class_values``
(the argmax is ``ctq predict``'s class); the file does not carry the class values themselves.
"""

from __future__ import annotations

import os

import numpy as np

from ctq import files, indb
from ctq.errors import UsageError
from ctq.scoring import TrainedModel


def keras_model(model: TrainedModel, state: list):
    """The standalone Keras model of ``model`` whose stored state is ``state`` (its arrays, see
    :func:`ctq.engines.base.Engine.read_state`; see the module docstring): input [batch, input_dim]
    raw features (an array feature flat: reshaped to ``feature_shape`` inside); output [batch,
    classes] probabilities or [batch, 1] values in target units. Raises UsageError for a model on
    categorical features (their vocabulary lives in the database)."""
    keras = indb.import_keras()
    stats = model.stats
    if stats.categories:
        raise UsageError(f"model {model.model_id} of run {model.run_id} takes categorical features "
                         f"({', '.join(sorted(stats.categories))}) encoded in the database with the pack's "
                         "vocabulary; a standalone file cannot encode them yet: score with ctq predict")
    width, outputs = int(stats.input_dim), int(stats.n_outputs)
    shape = indb.input_shape(stats)
    trained = indb.CompiledModel(model.architecture, model.hyperparameters, shape, outputs, model.task)
    trained.load(state)
    # the file holds the weights only, uncompiled: no training settings (ctq's metric classes) in it
    plain = indb.build_model(model.architecture, shape, outputs, model.task)
    plain.set_weights(trained.model.get_weights())
    inputs = keras.Input((width,), name="features")
    std = np.asarray(stats.std, np.float64)
    x = keras.layers.Normalization(mean=list(stats.mean), variance=list(std * std), name="ctq_normalization")(inputs)
    if shape != (width,):  # an array feature the model takes reshaped (feature_shape, e.g. an image)
        x = keras.layers.Reshape(shape, name="ctq_feature_shape")(x)
    y = plain(x)
    if model.task == "regression":
        y = keras.layers.Rescaling(scale=float(stats.target_std or 1.0),
                                   offset=float(stats.target_mean or 0.0), name="ctq_target_units")(y)
    return keras.Model(inputs, y, name=f"ctq_run{model.run_id}_model{model.model_id}")


def check_path(path: str, force: bool) -> None:
    """Refuse (exit 2) a name Keras will not save to, a missing or unwritable directory, anything
    but a regular file (ctq.files.target), or an existing file (a dangling link included) without
    ``force``; before anything is read from the database. The directory is proven writable by
    creating (and removing) a file there, as :func:`save` will."""
    if not path.endswith(".keras"):
        raise UsageError(f"{path}: the file name must end in .keras (the Keras format)")
    files.target(path, "PATH")
    if os.path.lexists(path) and not force:
        raise UsageError(f"{path}: file exists; use --force to overwrite it")
    files.check_writable(path, "PATH")


def save(model: TrainedModel, state: list, path: str) -> None:
    """Write the file whole or not at all (ctq.files.replacing: a link written through, an
    existing file's mode kept)."""
    built = keras_model(model, state)
    with files.replacing(path, "PATH", ".keras") as temporary:
        built.save(temporary)

"""The half of ctq that runs *inside* the database server, in PL/Python.

``ctq install`` stores this file's source in ``ctq.server_code``; the PL/Python functions in
``sql_templates/`` load it once per backend process into ``GD`` and call the functions below.
It imports nothing from the client package (the server never has ``ctq`` on its path), only the
standard library, numpy and, lazily, Keras. The client imports it too, but only for the pure
helpers (state encoding) that both sides must agree on.

Why things are the way they are (measured, see ../shared/reference/engineering-notes.md):
- data arrives packed (thousands of examples per ``bytea`` row) and is decoded once per data
  version and segment, then kept in ``GD``: decoding is the whole in-database penalty;
- the built, compiled Keras model is cached per architecture + optimizer settings: under jax,
  rebuilding per hop costs a compile (about a second) every time;
- the *whole* training state (model variables, seed-generator state, optimizer slots and
  iteration count) travels between hops, so MOP training equals sequential training;
- each backend pins its threads to its share of the cores, so S concurrent segments do not fight;
- a Keras callback runs a trivial SPI query a few times a second so that a query cancel,
  ``statement_timeout`` or ``pg_terminate_backend`` interrupts training within about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time

import numpy as np

STATE_MAGIC = b"CTQS\x01"
CANCEL_CHECK_SECONDS = 0.25
ACTIVATIONS = {"relu", "tanh", "sigmoid", "elu", "selu", "gelu", "softplus", "swish", "leaky_relu", "linear"}
CODE_CARRYING_CLASSES = {"Lambda", "TFOpLambda"}

# SQLSTATEs the client maps to its error types: bad source data (exit 2) and a model that cannot
# train (that model fails, the run goes on). Anything else from a hop is treated as transient.
SQLSTATE_DATA = "22000"
SQLSTATE_MODEL = "CTQ01"


class DataProblem(ValueError):
    """The source data cannot be packed as configured."""


def call(plpy, fn, **kwargs):
    """Run ``fn`` and turn Python failures into SQL errors with a SQLSTATE the client understands.

    Server errors (a cancel or a terminated backend raised inside SPI) pass through untouched.
    """
    try:
        return fn(plpy=plpy, **kwargs)
    except plpy.SPIError:
        raise
    except DataProblem as exc:
        plpy.error(str(exc), sqlstate=SQLSTATE_DATA)
    except Exception as exc:  # a model that cannot be built or trained: deterministic, fail the model
        plpy.error(f"{type(exc).__name__}: {exc}", sqlstate=SQLSTATE_MODEL)

# ----------------------------------------------------------------------------------------------
# Model state: a flat, self-describing byte string (header + raw arrays), cheaper than .npz.


def encode_state(arrays: list[np.ndarray]) -> bytes:
    """Serialize a list of arrays; the header records dtype and shape of each."""
    arrays = [np.asarray(a) for a in arrays]  # (ascontiguousarray would turn scalars into 1-d)
    header = json.dumps([[a.dtype.str, list(a.shape)] for a in arrays]).encode()
    return b"".join([STATE_MAGIC, struct.pack("<I", len(header)), header] + [a.tobytes() for a in arrays])


def decode_state(blob: bytes) -> list[np.ndarray]:
    """Inverse of :func:`encode_state`; raises ValueError on anything else."""
    blob = bytes(blob)
    if not blob.startswith(STATE_MAGIC):
        raise ValueError("not a ctq model state")
    (hlen,) = struct.unpack_from("<I", blob, len(STATE_MAGIC))
    offset = len(STATE_MAGIC) + 4
    spec = json.loads(blob[offset : offset + hlen])
    offset += hlen
    out = []
    for dtype, shape in spec:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out.append(np.frombuffer(blob, dtype=dt, count=count, offset=offset).reshape(shape))
        offset += count * dt.itemsize
    if offset != len(blob):
        raise ValueError("model state has trailing bytes")
    return out


# ----------------------------------------------------------------------------------------------
# Environment of the backend process.


def pin_threads(cores) -> None:
    """Confine every thread of this backend to ``cores``.

    XLA ignores its thread flags; affinity is the only knob that works. Threads created later
    inherit the mask of their creator, but jax creates pools lazily, so this runs on every hop.
    """
    if not cores or not hasattr(os, "sched_setaffinity"):
        return
    wanted = set(int(c) for c in cores) & set(range(os.cpu_count() or 1))
    if not wanted:
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), wanted)
        except OSError:  # a thread that ended meanwhile
            pass


def import_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import keras

    return keras


def probe() -> dict:
    """What `ctq doctor` reports about the server-side Python."""
    import sys

    info = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numpy_path": os.path.dirname(np.__file__),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    t0 = time.perf_counter()
    keras = import_keras()
    info.update(
        keras=keras.__version__,
        backend=keras.backend.backend(),
        keras_import_seconds=round(time.perf_counter() - t0, 3),
    )
    backend_module = __import__(info["backend"])
    info["backend_version"] = getattr(backend_module, "__version__", "?")
    return info


# ----------------------------------------------------------------------------------------------
# Architectures. ``arch`` is the canonical dict the client stores in ctq.models.architecture:
# {"layers": [{"type": "dense", ...}, ...]} or {"keras_json": {...}}.


def reject_code(node, where="model") -> None:
    """Refuse configs that carry Python code before Keras sees them (safe mode is the 2nd line)."""
    if isinstance(node, dict):
        if node.get("class_name") in CODE_CARRYING_CLASSES:
            raise ValueError(f"{where}: layer class {node['class_name']!r} carries Python code and is refused")
        if "__lambda__" in node or node.get("function_type") == "lambda":
            raise ValueError(f"{where}: serialized Python function is refused")
        for key, value in node.items():
            reject_code(value, where)
    elif isinstance(node, list):
        for value in node:
            reject_code(value, where)


def build_model(arch: dict, input_dim: int, n_outputs: int, task: str):
    keras = import_keras()
    if "keras_json" in arch:
        config = arch["keras_json"]
        reject_code(config)
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
        return model
    layers = [keras.Input((input_dim,))]
    for spec in arch["layers"]:
        kind = spec["type"]
        if kind == "dense":
            activation = spec.get("activation", "relu")
            if activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}")
            l2 = float(spec.get("l2") or 0.0)
            layers.append(
                keras.layers.Dense(
                    int(spec["units"]),
                    activation=activation,
                    kernel_regularizer=keras.regularizers.L2(l2) if l2 > 0 else None,
                )
            )
        elif kind == "dropout":
            layers.append(keras.layers.Dropout(float(spec["rate"])))
        elif kind == "batch_norm":
            layers.append(keras.layers.BatchNormalization())
        else:
            raise ValueError(f"unknown layer type {kind!r}")
    if task == "classification":
        layers.append(keras.layers.Dense(n_outputs, activation="softmax"))
    else:
        layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def make_optimizer(hyper: dict):
    keras = import_keras()
    name = hyper.get("optimizer", "adam")
    lr = float(hyper.get("learning_rate", 0.001))
    classes = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adamw": keras.optimizers.AdamW,
        "adagrad": keras.optimizers.Adagrad,
        "nadam": keras.optimizers.Nadam,
    }
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}")
    kwargs = {"learning_rate": lr}
    if hyper.get("momentum") is not None and name in ("sgd", "rmsprop"):
        kwargs["momentum"] = float(hyper["momentum"])
    return classes[name](**kwargs)


def compile_model(model, hyper: dict, task: str):
    if task == "classification":
        loss, metric = "sparse_categorical_crossentropy", "accuracy"
    else:
        loss, metric = "mse", "mae"
    model.compile(optimizer=make_optimizer(hyper), loss=loss, metrics=[metric])
    model.optimizer.build(model.trainable_variables)
    return model


def to_backend(arrays: list[np.ndarray]) -> list:
    """Under jax, one device_put for the whole state: a third of the cost of one per variable."""
    if import_keras().backend.backend() == "jax":
        import jax

        return jax.device_put(list(arrays))
    return arrays


def state_variables(model) -> list:
    """Everything that must hop: model variables (incl. seed generators) + optimizer variables."""
    return list(model.variables) + list(model.optimizer.variables)


class CompiledModel:
    """A built and compiled model reused across hops of every model sharing its settings."""

    def __init__(self, arch, hyper, input_dim, n_outputs, task):
        self.args = (arch, input_dim, n_outputs, task)
        self.model = compile_model(build_model(arch, input_dim, n_outputs, task), hyper, task)
        self.optimizer_init = [np.array(v.numpy()) for v in self.model.optimizer.variables]

    def initial_state(self, seed: int, hyper: dict) -> list[np.ndarray]:
        """The state a model starts from: its seed decides the initial weights; the learning rate
        is an optimizer variable, so models that differ only in it share one compiled model."""
        keras = import_keras()
        keras.utils.set_random_seed(int(seed))
        fresh = build_model(*self.args)
        optimizer = [a.copy() for a in self.optimizer_init]
        for i, var in enumerate(self.model.optimizer.variables):
            if var.path.endswith("learning_rate"):
                optimizer[i] = np.asarray(float(hyper.get("learning_rate", 0.001)), dtype=optimizer[i].dtype)
        return [np.array(v.numpy()) for v in fresh.variables] + optimizer

    def load(self, arrays: list[np.ndarray]) -> None:
        variables = state_variables(self.model)
        if len(arrays) != len(variables):
            raise ValueError(f"model state has {len(arrays)} arrays, the model expects {len(variables)}")
        for var, value in zip(variables, arrays):
            if tuple(var.shape) != tuple(value.shape):
                raise ValueError(f"state shape {value.shape} does not fit variable {var.path} {tuple(var.shape)}")
        for var, value in zip(variables, to_backend(arrays)):
            var.assign(value)

    def dump(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in state_variables(self.model)]


def model_cache_key(arch, hyper, input_dim, n_outputs, task) -> str:
    compile_part = {k: hyper.get(k) for k in ("optimizer", "momentum")}  # learning rate: in the state
    blob = json.dumps([arch, compile_part, input_dim, n_outputs, task], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def compiled_model(GD, arch, hyper, input_dim, n_outputs, task) -> CompiledModel:
    cache = GD.setdefault("ctq.models", {})
    key = model_cache_key(arch, hyper, input_dim, n_outputs, task)
    if key not in cache:
        cache[key] = CompiledModel(arch, hyper, input_dim, n_outputs, task)
    return cache[key]


# ----------------------------------------------------------------------------------------------
# Packed data. A packed table has columns (segment int, buffer_id int, rows int, x bytea, y bytea);
# segment -1 holds the validation buffers. Decoded arrays are cached per (table, segment); the
# table's name embeds the data version, so new data means a new key and old entries are dropped.


def decode_buffers(rows, input_dim: int, task: str):
    xs, ys = [], []
    ydtype = np.int32 if task == "classification" else np.float32
    for r in rows:
        n = r["rows"]
        xs.append(np.frombuffer(r["x"], dtype=np.float32).reshape(n, input_dim))
        ys.append(np.frombuffer(r["y"], dtype=ydtype).reshape(n))
    if not xs:
        return np.zeros((0, input_dim), np.float32), np.zeros((0,), ydtype)
    return np.concatenate(xs), np.concatenate(ys)


def segment_data(plpy, GD, pack_table: str, segment: int, input_dim: int, task: str):
    cache = GD.setdefault("ctq.data", {})
    key = (pack_table, int(segment))
    if key not in cache:
        for old in [k for k in cache if k[0] != pack_table]:
            del cache[old]
        rows = plpy.execute(
            f"SELECT rows, x, y FROM {pack_table} WHERE segment = {int(segment)} ORDER BY buffer_id"
        )
        cache[key] = decode_buffers(rows, input_dim, task)
    return cache[key]


# ----------------------------------------------------------------------------------------------
# One hop: one model, one sub-epoch, one segment.


def cancel_callback(plpy):
    """Let the server deliver interrupts while Python runs (they are only seen inside SPI)."""
    keras = import_keras()

    class CancelCheck(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last = time.monotonic()

        def _check(self, batch=None, logs=None):
            now = time.monotonic()
            if now - self.last >= CANCEL_CHECK_SECONDS:
                self.last = now
                plpy.execute("SELECT 1")

        on_train_batch_end = _check
        on_test_batch_end = _check

    return CancelCheck()


def train_hop(*, plpy, GD, pack_table, segment, arch, hyper, task, input_dim, n_outputs, seed, state,
              evaluate, cores):
    """Train one sub-epoch and return the new state and metrics (dict of the SQL result columns)."""
    started = time.time()
    pin_threads(cores)
    arch = json.loads(arch) if isinstance(arch, str) else arch
    hyper = json.loads(hyper) if isinstance(hyper, str) else hyper
    cm = compiled_model(GD, arch, hyper, input_dim, n_outputs, task)
    cm.load(decode_state(state) if state is not None else cm.initial_state(seed, hyper))
    x, y = segment_data(plpy, GD, pack_table, segment, input_dim, task)
    batch = int(hyper.get("batch_size", 64))
    usable = len(x) - len(x) % batch  # stable batch shapes: one compile per shape under jax
    metric_name = "accuracy" if task == "classification" else "mae"
    callback = cancel_callback(plpy)
    t0 = time.perf_counter()
    loss = metric = None
    if usable > 0:
        history = cm.model.fit(x[:usable], y[:usable], batch_size=batch, epochs=1, shuffle=False,
                               verbose=0, callbacks=[callback])
        loss = float(history.history["loss"][-1])
        metric = float(history.history[metric_name][-1])
    compute = time.perf_counter() - t0
    if loss is not None and not np.isfinite(loss):
        raise FloatingPointError(f"training diverged: loss is {loss}")
    val_loss = val_metric = None
    if evaluate:
        xv, yv = segment_data(plpy, GD, pack_table, -1, input_dim, task)
        if len(xv):
            t1 = time.perf_counter()
            result = cm.model.evaluate(xv, yv, batch_size=1024, verbose=0, return_dict=True,
                                       callbacks=[callback])
            compute += time.perf_counter() - t1
            val_loss, val_metric = float(result["loss"]), float(result[metric_name])
    new_state = encode_state(cm.dump())
    return {
        "state": new_state,
        "loss": loss,
        "metric": metric,
        "rows": int(usable),
        "compute_seconds": compute,
        "val_loss": val_loss,
        "val_metric": val_metric,
        "started_at": started,
        "finished_at": time.time(),
    }


def warmup(*, plpy, GD, cores, pack_table, segment, task, input_dim, n_outputs, models) -> str:
    """Once per connection, before the first hop: import Keras, pin threads, decode this segment's
    data and the validation set, and build + compile every (architecture, optimizer) of the run.

    All of this would otherwise land in the first hop of each model on each segment; done here it
    runs once, on all segments at the same time, and hops carry only per-hop costs.
    """
    pin_threads(cores)
    keras = import_keras()
    segment_data(plpy, GD, pack_table, segment, input_dim, task)
    segment_data(plpy, GD, pack_table, -1, input_dim, task)
    for arch, hyper in json.loads(models or "[]"):
        compiled_model(GD, arch, hyper, input_dim, n_outputs, task)
    return keras.backend.backend()


# ----------------------------------------------------------------------------------------------
# Packing: source table -> shuffled, normalised, per-segment float32 buffers (MADlib-style).


def pack(*, plpy, source, features, label, task, array_feature, validation_fraction, segments,
         buffer_rows, seed, target) -> str:
    """Pack ``source`` into ``target`` (already created, partitioned by segment); returns JSON stats.

    Identifiers arrive already quoted by the client; only validated, quoted names reach SQL.
    """
    if array_feature:
        select = f"SELECT {features[0]}::float8[] AS x, {label}::float8 AS y FROM {source}"
    else:
        cols = ", ".join(f"{f}::float8" for f in features)
        select = f"SELECT ARRAY[{cols}] AS x, {label}::float8 AS y FROM {source}"
    plpy.execute("SET LOCAL synchronize_seqscans = off")  # same row order every time: reproducible shuffle
    xs, ys = [], []
    cursor = plpy.cursor(select)
    while True:
        chunk = cursor.fetch(20000)
        if not chunk:
            break
        for r in chunk:
            xs.append(r["x"])
            ys.append(r["y"])
    if not xs:
        raise DataProblem("the source table has no rows")
    try:
        x = np.asarray(xs, dtype=np.float64)
    except (ValueError, TypeError):
        raise DataProblem(f"feature column {features[0]} has arrays of different lengths or NULL elements")
    y = np.asarray(ys, dtype=np.float64)
    if x.ndim != 2:
        raise DataProblem("features must form a 2-D matrix")
    bad = ~np.isfinite(x).all(axis=0)
    if bad.any():
        col = features[int(np.argmax(bad))] if not array_feature else features[0]
        raise DataProblem(f"feature column {col} contains NaN or infinite values")
    if not np.isfinite(y).all():
        raise DataProblem(f"label column {label} contains NaN or infinite values")
    n = len(x)
    order = np.random.default_rng(int(seed)).permutation(n)
    x, y = x[order], y[order]
    n_val = int(round(n * float(validation_fraction)))
    if n - n_val < segments:
        raise DataProblem(f"{n - n_val} training rows cannot fill {segments} segments")
    xv, yv, xt, yt = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    mean = xt.mean(axis=0)
    std = xt.std(axis=0)
    std[std == 0] = 1.0
    class_values = None
    if task == "classification":
        if not np.all(y == np.round(y)):
            raise DataProblem(f"label column {label} has non-integer values; classification needs class ids")
        class_values = np.unique(y)
        if len(class_values) < 2:
            raise DataProblem(f"label column {label} has a single class")
        yt_enc = np.searchsorted(class_values, yt).astype(np.int32)
        yv_enc = np.searchsorted(class_values, yv).astype(np.int32)
    else:
        yt_enc, yv_enc = yt.astype(np.float32), yv.astype(np.float32)
    xt = ((xt - mean) / std).astype(np.float32)
    xv = ((xv - mean) / std).astype(np.float32)
    plan = plpy.prepare(
        f"INSERT INTO {target} (segment, buffer_id, rows, x, y) VALUES ($1, $2, $3, $4, $5)",
        ["int4", "int4", "int4", "bytea", "bytea"],
    )
    per_segment = []
    bounds = np.linspace(0, len(xt), segments + 1).astype(int)
    buffer_id = 0

    def write(segment, xs_, ys_):
        nonlocal buffer_id
        for start in range(0, len(xs_), buffer_rows):
            xb, yb = xs_[start : start + buffer_rows], ys_[start : start + buffer_rows]
            plpy.execute(plan, [segment, buffer_id, len(xb), xb.tobytes(), yb.tobytes()])
            buffer_id += 1

    for s in range(segments):
        lo, hi = bounds[s], bounds[s + 1]
        write(s, xt[lo:hi], yt_enc[lo:hi])
        per_segment.append(int(hi - lo))
    write(-1, xv, yv_enc)
    return json.dumps({
        "rows": n,
        "train_rows": int(len(xt)),
        "validation_rows": int(n_val),
        "rows_per_segment": per_segment,
        "input_dim": int(x.shape[1]),
        "n_outputs": int(len(class_values)) if class_values is not None else 1,
        "class_values": class_values.tolist() if class_values is not None else None,
        "mean": mean.tolist(),
        "std": std.tolist(),
    })

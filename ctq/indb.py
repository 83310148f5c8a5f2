"""The half of ctq that runs *inside* the database server, in PL/Python.

``ctq install`` stores this file's source in ``ctq.server_code``; the PL/Python functions in
``sql_templates/`` load it once per backend process into ``GD`` and call the functions below.
It imports nothing from the client package (the server never has ``ctq`` on its path) but
``ctq.rules``, which ``ctq install`` ships beside it (bootstrap.py loads it first, as ``ctq_rules``);
otherwise only the standard library, numpy and, lazily, Keras. The client imports this module too,
but only for the pure helpers (state and buffer decoding) that both sides must agree on.

The interface with the client is SQL only: training is the aggregate ``ctq.train_step`` over the
buffer rows of one segment (the rows arrive as the aggregate's input, as in MADlib's
``fit_transition``: a function running on a Greenplum segment cannot read distributed tables),
with the model's state and a JSON of parameters as its other arguments; it returns the new state
and the metrics. The only tables read with SPI are ``ctq.meta`` and ``ctq.server_code`` (by the
bootstrap), which are replicated on Greenplum.

Why things are the way they are (measured, see ../shared/reference/engineering-notes.md):
- data arrives packed (thousands of examples per ``bytea`` row) and is decoded once per data
  version and segment, then kept in ``GD``: decoding is the whole in-database penalty (unless the
  segment streams: then it is decoded buffer by buffer on every hop and never kept);
- the built, compiled Keras model is cached per architecture + optimizer settings: under jax,
  rebuilding per hop costs a compile (about a second) every time;
- the *whole* training state (model variables, seed-generator state, optimizer slots and
  iteration count) travels between hops, so MOP training equals sequential training;
- each backend pins its threads to its share of the cores, so S concurrent segments do not fight;
- a Keras callback runs a trivial SPI query a few times a second so that a query cancel,
  ``statement_timeout`` or ``pg_terminate_backend`` interrupts training within about a second.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import struct
import sys
import threading
import time

import numpy as np

if __name__ == "ctq.indb":  # imported by the client (its tests, export)
    from ctq import rules
else:  # inside the server: the copy of ctq/rules.py that ``ctq install`` stored, loaded by bootstrap.py
    rules = sys.modules["ctq_rules"]

STATE_MAGIC = b"CTQS\x01"
CANCEL_CHECK_SECONDS = 0.25
INTERRUPT_POLL_SECONDS = 0.05  # how often a Keras import lets the server deliver a cancel

# SQLSTATEs the client maps to its error types: bad source data (exit 2), a model that cannot
# train (that model fails, the run goes on), a model whose working state a crash took (the run
# goes back to its checkpoints: state_tables.sql). Anything else from a hop is treated as transient.
SQLSTATE_DATA = "22000"
SQLSTATE_MODEL = "CTQ01"
SQLSTATE_STATE_LOST = "CTQ03"
# the server's own resource shortages, not the model's failure: the class-53 SQLSTATEs the server
# gives them (a hop retries, then the run stops resumable, exit 3); a full disk while a hop wrote
# its working state failed every model for good (a user trial)
SQLSTATE_OF_ERRNO = {errno.ENOSPC: "53100", errno.EDQUOT: "53100", errno.EMFILE: "53000", errno.ENFILE: "53000"}


class DataProblem(ValueError):
    """The source data cannot be packed as configured."""


class StateLost(Exception):
    """The catalog records hops of a model whose state after them is not stored: a crash took its
    working state (working_states_files.sql)."""


class ModelFailure(Exception):
    """A model that cannot go on, for a reason ctq states in full (training diverged): its
    message is the reason, with no Python exception name before it."""


def model_error_text(exc: Exception) -> str:
    """What a model's failure says: ctq's own reason as is, anything else with its exception's name."""
    return str(exc) if isinstance(exc, ModelFailure) else f"{type(exc).__name__}: {exc}"


def call(plpy, fn, **kwargs):
    """Run ``fn`` and turn Python failures into SQL errors with a SQLSTATE the client understands.

    Server errors (a cancel or a terminated backend raised inside SPI) and the function's own
    SQL errors (:func:`raise_sql`: plpy.Error, e.g. a refused privilege) pass through untouched.
    ``fn`` runs with the server's signals held (see :func:`signals_held`).
    """
    use_compile_cache(os.getcwd())  # a server backend's working directory is its data directory
    try:
        with signals_held():
            return fn(plpy=plpy, **kwargs)
    except (plpy.SPIError, plpy.Error):
        raise
    except DataProblem as exc:
        raise_sql(plpy, str(exc), SQLSTATE_DATA)
    except StateLost as exc:
        raise_sql(plpy, str(exc), SQLSTATE_STATE_LOST)
    except OSError as exc:
        raise_sql(plpy, model_error_text(exc), SQLSTATE_OF_ERRNO.get(exc.errno, SQLSTATE_MODEL))
    except Exception as exc:  # a model that cannot be built or trained: deterministic, fail the model
        raise_sql(plpy, model_error_text(exc), SQLSTATE_MODEL)


def raise_sql(plpy, message: str, sqlstate: str):
    """End the function with an SQL error of ``sqlstate``. PL/Python before PostgreSQL 9.6
    (Greenplum 6 is 9.4) takes no ``sqlstate`` argument; there an SPIError raised with its
    ``spidata`` (sqlerrcode, detail, hint, query, position: plpy_elog.c, PLy_get_spi_error_data)
    carries the code to the server."""
    try:
        plpy.error(message, sqlstate=sqlstate)
    except TypeError:
        error = plpy.SPIError(message)
        error.spidata = (sqlstate_code(sqlstate), None, None, None, 0)
        raise error from None


def sqlstate_code(sqlstate: str) -> int:
    """A five-character SQLSTATE as the server's int (MAKE_SQLSTATE: six bits a character)."""
    return sum(((ord(c) - ord("0")) & 0x3F) << (6 * i) for i, c in enumerate(sqlstate))


# Signals a fault raises in the thread that caused it: never held.
_SYNCHRONOUS_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT, signal.SIGTRAP}
_HELD_SIGNALS = signal.valid_signals() - _SYNCHRONOUS_SIGNALS


@contextlib.contextmanager
def signals_held():
    """Hold the signals the server sends this process (cancel, terminate, SIGUSR1/2...) while ctq's
    Python runs; they are delivered, to this (the server's) thread, in :func:`signals_released`
    (the cancel check, a few times a second) and when the block ends.

    Why: jax/XLA run thread pools inside the backend. A signal sent to the process is handled on
    any thread that does not block it, and the server's handlers are not thread-safe: on Greenplum
    segments, MOP runs crashed with SIGSEGV and "corrupted double-linked list". Threads inherit
    the signal mask of the thread that starts them, and XLA starts its threads while Keras runs
    inside this block, so they never take a signal.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def signals_released():
    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def deliver_interrupts(plpy) -> None:
    """Let the server deliver a pending cancel or terminate: it is raised by SPI (a terminate ends
    the process there)."""
    with signals_released():
        plpy.execute("SELECT 1")

# ----------------------------------------------------------------------------------------------
# Model state. Stored as *parts*: rows (array_index, byte_offset, data) of ``ctq.model_states``, one
# header row (array_index -1: the JSON layout, [[dtype, shape], ...]) and each array's raw bytes cut
# into pieces of at most STATE_PART_BYTES, so no value nears the 1 GB field limit and no backend
# ever holds the whole state twice: parts stream into the model's variables one array at a time
# (:class:`StateAssembler`) and out of them one piece at a time (:func:`state_parts`).
# The flat encoding below (header + raw arrays in one value) is how a ctq before parts stored a
# state (models.state; after the upgrade a part of array_index LEGACY_PART): read, never written
# (encode_state makes one for the tests of that path).

STATE_PART_BYTES = 16 << 20  # 16 MiB: a few copies of one part are nothing next to a model's state
HEADER_PART = -1
LEGACY_PART = -2


def encode_state(arrays: list[np.ndarray]) -> bytes:
    """Serialize a list of arrays; the header records dtype and shape of each."""
    arrays = [np.asarray(a) for a in arrays]  # (ascontiguousarray would turn scalars into 1-d)
    header = state_layout(arrays)
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


def state_layout(arrays) -> bytes:
    """The header of a flat state: [[dtype, shape], ...] of each array, as JSON bytes."""
    return json.dumps(layout_of(arrays)).encode()


def layout_of(arrays) -> list:
    return [[np.dtype(a.dtype).str, [int(n) for n in a.shape]] for a in arrays]


def part_bounds(arrays, part_bytes: int = STATE_PART_BYTES) -> list[tuple[int, int, int]]:
    """(array_index, byte_offset, length) of each part of a state after its header: each array's
    raw bytes in pieces of at most ``part_bytes`` (an empty array: one empty part)."""
    bounds = []
    for index, array in enumerate(arrays):
        nbytes = int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
        bounds += [(index, offset, min(part_bytes, nbytes - offset)) for offset in range(0, max(nbytes, 1), part_bytes)]
    return bounds


def state_part(arrays, hops: int | None, number: int, bounds):
    """Part ``number`` of a state, (array_index, byte_offset, bytes): 0 is the header ({"layout":
    [[dtype, shape], ...], "hops": the hops the state has trained}), n > 0 the piece ``bounds[n -
    1]`` (:func:`part_bounds`) of its array's raw bytes, as a view of the array (valid until the
    array changes; copied by whatever stores it). ``arrays`` may be variables. IndexError for a
    number the state does not have."""
    if number == 0:
        return HEADER_PART, 0, json.dumps({"layout": layout_of(arrays), "hops": hops}).encode()
    if not 0 < number <= len(bounds):
        raise IndexError(f"the state has {len(bounds) + 1} parts, not a part {number}")
    index, offset, length = bounds[number - 1]
    flat = memoryview(np.ascontiguousarray(to_numpy(arrays[index])).reshape(-1)).cast("B")
    return index, offset, flat[offset : offset + length]


def state_parts(arrays, hops: int | None = None, part_bytes: int = STATE_PART_BYTES):
    """Yield a state's parts (:func:`state_part`), header first, one at a time."""
    arrays = list(arrays)
    bounds = part_bounds(arrays, part_bytes)
    for number in range(len(bounds) + 1):
        yield state_part(arrays, hops, number, bounds)


def to_numpy(value) -> np.ndarray:
    """A variable's or an array's value as numpy (a view where the backend allows it)."""
    return np.asarray(getattr(value, "value", value))


class StateAssembler:
    """Rebuild a state from its parts, given in any order, handing each array to ``on_array(index,
    array)`` the moment its last byte arrives (its buffer is then let go), so that at most one
    array's buffer is held besides what ``on_array`` keeps.

    ``expected``: [(dtype, shape)] of each array (a model's variables), or None to take the layout
    from the header part, which must then come first; ``only_expected``: the state may have more
    arrays than ``expected`` (another optimizer's, for a warm start): those are skipped. Raises
    ValueError for parts that do not fit the layout, and (:meth:`finish`) for a header that
    disagrees with it or a missing part."""

    def __init__(self, expected=None, on_array=None, only_expected: bool = False):
        self.expected = None if expected is None else [(np.dtype(d), tuple(int(n) for n in s)) for d, s in expected]
        self.on_array = on_array or (lambda index, array: None)
        self.only_expected = only_expected
        self.header = None  # the header part's layout
        self.hops = None  # the hops the state has trained, as its header says
        self.buffers: dict[int, tuple[np.ndarray, int]] = {}  # index -> (bytes so far, count received)
        self.done: set[int] = set()
        self.legacy = None

    def _layout(self):
        if self.expected is None and self.header is not None:
            self.expected = [(np.dtype(d), tuple(s)) for d, s in self.header]
        if self.expected is None:
            raise ValueError("model state: a part came before its header")
        return self.expected

    def add(self, index: int, offset: int, data) -> None:
        index, offset = int(index), int(offset)
        if index == HEADER_PART:
            header = json.loads(bytes(data))
            self.header, self.hops = header["layout"], header.get("hops")
            return
        if index == LEGACY_PART:  # a state written as one value, before parts existed
            self.legacy = decode_state(data)
            return
        layout = self._layout()
        if self.only_expected and index >= len(layout):
            return
        if not 0 <= index < len(layout) or index in self.done:
            raise ValueError(f"model state has a part for array {index}, the model has {len(layout)} arrays")
        dtype, shape = layout[index]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buffer, received = self.buffers.get(index) or (np.empty(nbytes, np.uint8), 0)
        data = memoryview(data).cast("B")
        if offset < 0 or offset + len(data) > nbytes:
            raise ValueError(f"model state: a part of array {index} lies outside its {nbytes} bytes")
        buffer[offset : offset + len(data)] = np.frombuffer(data, np.uint8)
        received += len(data)
        if received < nbytes:
            self.buffers[index] = (buffer, received)
            return
        self.buffers.pop(index, None)
        self.done.add(index)
        self.on_array(index, buffer.view(dtype).reshape(shape))

    def finish(self) -> None:
        """Check the state is whole and agrees with its header."""
        if self.legacy is not None:
            self.header = layout_of(self.legacy)
            self.expected = self.expected or [(a.dtype, a.shape) for a in self.legacy]
            for index, array in enumerate(self.legacy[: len(self.expected)] if self.only_expected else self.legacy):
                self.on_array(index, array)
                self.done.add(index)
        layout = self._layout()
        if self.header is not None:
            stored = [(np.dtype(d), tuple(s)) for d, s in self.header]
            if len(stored) < len(layout) or (len(stored) != len(layout) and not self.only_expected):
                raise ValueError(f"model state has {len(stored)} arrays, the model expects {len(layout)}")
            for (dtype, shape), (want_dtype, want_shape) in zip(stored, layout):
                if shape != want_shape or dtype != want_dtype:
                    raise ValueError(f"state array {dtype.str}{list(shape)} does not fit variable "
                                     f"{want_dtype.str}{list(want_shape)}")
        missing = sorted(set(range(len(layout))) - self.done)
        if missing:
            raise ValueError(f"model state is incomplete: {len(missing)} of {len(layout)} arrays missing")


def assemble_state(parts) -> list[np.ndarray] | None:
    """The arrays of a state from its parts ordered by array index (header first); None for no
    parts (a model that has not trained)."""
    arrays: list[np.ndarray] = []
    assembler = StateAssembler(on_array=lambda index, array: arrays.append((index, array)))
    seen = False
    for index, offset, data in parts:
        seen = True
        assembler.add(index, offset, data)
    if not seen:
        return None
    assembler.finish()
    return [a for _, a in sorted(arrays, key=lambda item: item[0])]


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


# jax's persistent compilation cache, on the server only (see use_compile_cache): a compile is
# 1-2 s per (architecture, optimizer, batch shape) and backend, and a backend lives one run.
COMPILE_CACHE_BYTES = 1 << 30  # least recently used entries go beyond this (needs filelock)
_compile_cache = {"root": None, "dir": None}


def use_compile_cache(root: str) -> None:
    """Have this backend's jax read and write compiled programs under ``root`` (the server's data
    directory: a backend's working directory, per segment on Greenplum), in a folder named by the
    jax, jaxlib and Keras versions, so that a re-run of the same grid, or another backend training
    the same architecture, loads its programs instead of compiling them. Takes effect at the
    Keras import (:func:`import_keras`); folders of other versions are removed then."""
    _compile_cache["root"] = root


def _enable_compile_cache(keras) -> None:
    root = _compile_cache["root"]
    if root is None or _compile_cache["dir"] is not None or not os.access(root, os.W_OK):
        return
    import shutil

    import jax
    import jaxlib

    parent = os.path.join(root, "ctq_compile_cache")
    name = f"jax-{jax.__version__}-jaxlib-{jaxlib.__version__}-keras-{keras.__version__}"
    path = os.path.join(parent, name)
    os.makedirs(path, exist_ok=True)
    for old in os.listdir(parent):
        if old != name:
            shutil.rmtree(os.path.join(parent, old), ignore_errors=True)
    try:  # filelock serialises the cache's readers and writers and bounds its size
        import filelock  # noqa: F401

        max_size = COMPILE_CACHE_BYTES
    except ImportError:
        max_size = -1
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_compilation_cache_max_size", max_size)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # a train step: 0.3-1.5 s
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _compile_cache["dir"] = path


def compile_cache_dir() -> str | None:
    """The folder this backend's compiled programs are cached in (None: no cache)."""
    return _compile_cache["dir"]


def import_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import sys

    # Keras imports matplotlib.pyplot when it can (for its image galleries: 0.3 of a backend's 2 s
    # import, measured): a server backend draws nothing, so it is kept out of that one import.
    hidden = "matplotlib" not in sys.modules
    if hidden:
        sys.modules["matplotlib"] = None
    try:
        import keras
    finally:
        if hidden and sys.modules.get("matplotlib", 0) is None:
            del sys.modules["matplotlib"]

    _enable_compile_cache(keras)
    return keras


def import_keras_interruptibly(plpy):
    """:func:`import_keras`, with the server's cancel and terminate delivered meanwhile.

    Importing Keras takes a backend about a second of CPU and runs no server code, so nothing
    could stop it: the segments' preload (ctq.probe) of a run refused at its source check (bad
    input) went on importing after ctq had exited, two cores busy for a second for nothing on a
    2-segment run (measured), one process per segment on a cluster. The import runs in a thread
    started while the signals are held (:func:`signals_held`: it never takes one) and this thread
    lets the server deliver them every ``INTERRUPT_POLL_SECONDS`` (a cancel raises here through
    SPI; a terminate ends the process, the import with it)."""
    if plpy is None or "keras" in sys.modules:
        return import_keras()
    outcome: dict = {}

    def work():
        try:
            outcome["keras"] = import_keras()
        except BaseException as exc:  # noqa: BLE001 - raised again in the server's thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="ctq keras import", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(INTERRUPT_POLL_SECONDS)
        if worker.is_alive():
            deliver_interrupts(plpy)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["keras"]


def probe(plpy=None) -> dict:
    """What `ctq doctor` reports about the server-side Python; the segments' preload
    (preload.sql) calls it to import Keras ahead of a run's warm-up."""
    info = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numpy_path": os.path.dirname(np.__file__),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    t0 = time.perf_counter()
    keras = import_keras_interruptibly(plpy)
    info.update(
        keras=keras.__version__,
        backend=keras.backend.backend(),
        keras_import_seconds=round(time.perf_counter() - t0, 3),
    )
    backend_module = __import__(info["backend"])
    info["backend_version"] = getattr(backend_module, "__version__", "?")
    folder = compile_cache_dir()
    info["compile_cache"] = folder
    if folder:
        files = [e for e in os.scandir(folder) if e.is_file()]
        info["compile_cache_bytes"] = sum(e.stat().st_size for e in files)
    return info


# ----------------------------------------------------------------------------------------------
# Architectures. ``arch`` is the canonical dict the client stores in ctq.models.architecture:
# {"layers": [{"type": "dense", ...}, ...]} or {"keras_json": {...}}.


def reject_code(config, where="model") -> None:
    """Refuse a Keras config that carries Python code before Keras sees it (rules.find_code, the
    client's own scan; Keras' safe mode is the second line)."""
    found = rules.find_code(config)
    if found is not None:
        raise ValueError(f"{where}: refused because it carries Python code ({found})")


def input_shape(stats: rules.PackStats) -> tuple[int, ...]:
    """The shape of one example as the model takes it: ``feature_shape`` (an array feature
    reshaped, e.g. an image [28, 28, 1]) or (input_dim,)."""
    return tuple(int(v) for v in (stats.feature_shape or [stats.input_dim]))


def model_from_json(keras, config: dict):
    """The Keras model of a ``Model.to_json()`` config (a parsed one), in safe mode (no code
    runs). Keras empties the config of a Functional model it deserializes (found by a user trial:
    the client's check left nothing for the next build): it gets a copy, so the caller's config,
    a model's architecture built again at every initialise, stays whole. Raises what Keras raises
    (TypeError, ValueError, KeyError...) for a config it cannot load."""
    import copy

    return keras.saving.deserialize_keras_object(copy.deepcopy(config), safe_mode=True)


def build_model(arch: dict, shape, n_outputs: int, task: str):
    keras = import_keras()
    if "keras_json" in arch:
        config = arch["keras_json"]
        reject_code(config)
        return model_from_json(keras, config)
    layers = [keras.Input(tuple(shape))]
    if len(shape) > 1:  # a shaped (image) input: the dense shorthand works on it flattened
        layers.append(keras.layers.Flatten())
    for spec in arch["layers"]:
        kind = spec["type"]
        if kind == "dense":
            activation = spec.get("activation", "relu")
            if activation not in rules.ACTIVATIONS:
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


def make_optimizer(hyper: rules.Hyperparameters):
    keras = import_keras()
    name, lr = hyper.optimizer, float(hyper.learning_rate)
    classes = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adamw": keras.optimizers.AdamW,
        "adagrad": keras.optimizers.Adagrad,
        "nadam": keras.optimizers.Nadam,
    }
    if name not in rules.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}")
    kwargs = {"learning_rate": lr}
    if hyper.momentum is not None and name in rules.MOMENTUM_OPTIMIZERS:
        kwargs["momentum"] = float(hyper.momentum)
    return classes[name](**kwargs)


# Ranking metrics for imbalanced labels (``metric: val_auc``...), from Keras's own metrics on the
# sparse class indices ctq trains on. Binary labels: AUC, and precision/recall/F1 of the second
# class value (class index 1, e.g. true or 1); more classes: the macro average over classes, each
# one-vs-rest. A prediction is the most probable class (as for accuracy). Validation values are
# exact over the validation rows (one evaluate per hop; AUC with Keras's 200 thresholds).
# Which metric a model is compiled with: rules.compiled_metric, the client's rule too.
_METRIC_CLASSES = {}


def make_metric(task: str, metric: str | None, n_outputs: int):
    """The Keras metric compiled into a model (rules.compiled_metric), over the rows a sample weight
    marks as real: training pads its last batch with rows of weight 0 (see :func:`padded`), which
    must count for nothing, and a class weight must not weigh the metric (Keras weighs only the
    loss by it). Compiled as a weighted metric, so that Keras passes it the sample weights."""
    name = rules.compiled_metric(task, metric)
    if not _METRIC_CLASSES:
        keras = import_keras()
        ops = keras.ops

        def one_hot(y_true, n):
            return ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), n)

        def real_rows(sample_weight):
            """1 for a row of positive weight, 0 for a padding row; None stays None."""
            return None if sample_weight is None else ops.cast(ops.greater(sample_weight, 0), "float32")

        class Accuracy(keras.metrics.SparseCategoricalAccuracy):
            def __init__(self):
                super().__init__(name="accuracy")

            def update_state(self, y_true, y_pred, sample_weight=None):
                return super().update_state(y_true, y_pred, real_rows(sample_weight))

        class MeanAbsoluteError(keras.metrics.MeanAbsoluteError):
            def __init__(self):
                super().__init__(name="mae")

            def update_state(self, y_true, y_pred, sample_weight=None):
                return super().update_state(y_true, y_pred, real_rows(sample_weight))

        class SparseAUC(keras.metrics.AUC):
            """Keras's AUC on sparse class indices: one-vs-rest per class, macro average."""

            def __init__(self, n_classes):
                super().__init__(multi_label=True, num_labels=n_classes, name="auc")
                self.n_classes = n_classes

            def update_state(self, y_true, y_pred, sample_weight=None):
                return super().update_state(one_hot(y_true, self.n_classes), y_pred, real_rows(sample_weight))

        class ClassScore(keras.metrics.FBetaScore):
            """Precision, recall or F1 from Keras's per-class counts (FBetaScore's true/false
            positives and false negatives of the argmax prediction)."""

            def __init__(self, kind, n_classes):
                super().__init__(average=None, threshold=None, name=kind)
                self.kind, self.n_classes = kind, n_classes

            def update_state(self, y_true, y_pred, sample_weight=None):
                return super().update_state(one_hot(y_true, self.n_classes), y_pred, real_rows(sample_weight))

            def result(self):
                eps = keras.backend.epsilon()
                tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
                precision, recall = tp / (tp + fp + eps), tp / (tp + fn + eps)
                value = {"precision": precision, "recall": recall,
                         "f1": 2 * precision * recall / (precision + recall + eps)}[self.kind]
                return value[1] if self.n_classes == 2 else ops.mean(value)

        _METRIC_CLASSES.update(accuracy=Accuracy, mae=MeanAbsoluteError, auc=SparseAUC, score=ClassScore)
    if name in ("accuracy", "mae"):
        return _METRIC_CLASSES[name]()
    if name == "auc":
        return _METRIC_CLASSES["auc"](n_outputs)
    return _METRIC_CLASSES["score"](name, n_outputs)


def compile_model(model, hyper: rules.Hyperparameters, task: str, metric: str | None = None, n_outputs: int = 1):
    loss = "sparse_categorical_crossentropy" if task == "classification" else "mse"
    model.compile(optimizer=make_optimizer(hyper), loss=loss, weighted_metrics=[make_metric(task, metric, n_outputs)])
    model.optimizer.build(model.trainable_variables)
    return model


def to_backend(arrays: list[np.ndarray]) -> list:
    """Under jax, one device_put for the whole state: a third of the cost of one per variable."""
    if import_keras().backend.backend() == "jax":
        import jax

        return jax.device_put(list(arrays))
    return arrays


def state_size(arch: dict, hyper: rules.Hyperparameters, shape, n_outputs: int, task: str) -> dict:
    """What a model's training state weighs, counted from shapes, nothing allocated: the model is
    built in a ``keras.StatelessScope`` (whose variables defer their initialisation) and the
    optimizer on a probe variable of 7 elements, whose same-shaped variables are its slots per
    weight (Adam: 2, RMSprop: 1, SGD without momentum: 0).

    Returns {"parameters": every model variable's elements, "trainable": the trainable ones',
    "slots": optimizer variables per trainable weight, "state_bytes": the whole state's bytes}.
    Raises what building the model raises (a model that cannot be built).
    """
    keras = import_keras()
    from keras.src.backend.common import global_state  # no public API forgets deferred variables

    # Keras keeps every variable whose initialisation a StatelessScope deferred, to initialise it
    # at the next scope that does initialise: the training step's. Left there, the counted model
    # would be drawn in full during the warm-up's first pass (a 170M-parameter model: 1.9 GiB
    # more at the backend's peak, measured), and kept.
    deferred = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with keras.StatelessScope(initialize_variables=False):  # (True would draw every initial weight)
            model = build_model(arch, shape, n_outputs, task)
    finally:
        global_state.set_global_attribute("uninitialized_variables", deferred)
    probe = keras.Variable(np.zeros(7, "float32"))
    optimizer = make_optimizer(hyper)
    optimizer.build([probe])
    slots = sum(1 for v in optimizer.variables if tuple(v.shape) == (7,))

    def elements(variables):
        return sum(int(np.prod(v.shape)) for v in variables)

    def nbytes(variables):
        return sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
                   for v in variables)

    trainable = model.trainable_variables
    return {"parameters": elements(model.variables), "trainable": elements(trainable), "slots": slots,
            "state_bytes": nbytes(model.variables) + slots * nbytes(trainable)}


def host_memory_bytes() -> int | None:
    """The memory this server's processes may use: the host's (MemTotal), or its cgroup's limit
    (a container's) when lower; None where neither can be read."""
    limits = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                text = limit.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def model_sizes(*, plpy, params) -> dict:
    """``ctq.model_sizes``: each model's :func:`state_size` and the server's memory, for the
    client's memory check before the warm-up builds anything (coordinator, api.memory_refusal).
    ``params``: a :class:`rules.SizesRequest` as JSON."""
    p = rules.SizesRequest.from_json(params)
    shape, n_outputs = input_shape(p.stats), int(p.stats.n_outputs)
    return {"models": [_state_size_or_none(arch, hyper, shape, n_outputs, p.task) for arch, hyper in p.models],
            "memory_bytes": host_memory_bytes()}


def _state_size_or_none(arch, hyper, shape, n_outputs, task) -> dict | None:
    """None for a model that cannot be built so: the warm-up then builds it and says why."""
    try:
        return state_size(arch, hyper, shape, n_outputs, task)
    except Exception:  # noqa: BLE001 - an estimate; the warm-up reports the real failure
        return None


def state_variables(model) -> list:
    """Everything that must hop: model variables (incl. seed generators) + optimizer variables."""
    return list(model.variables) + list(model.optimizer.variables)


def uniform_value(variable):
    """A variable's value as one number where all its elements are equal, else as an array."""
    value = to_numpy(variable)
    flat = value.reshape(-1)
    if flat.size and bool(np.all(flat == flat[0])):
        return flat[0].item()
    return np.array(value)


class CompiledModel:
    """A built and compiled model reused across hops of every model sharing its settings."""

    def __init__(self, arch, hyper, shape, n_outputs, task, metric=None):
        self.args = (arch, tuple(shape), n_outputs, task)
        self.model = compile_model(build_model(arch, shape, n_outputs, task), hyper, task, metric, n_outputs)
        self.penalised = bool(self.model.losses)  # weight penalties (regularizers): see validation_pass
        # the optimizer's starting values, kept as one number per variable where all its elements
        # are equal (Adam's zero moments: two thirds of a state, never held twice)
        self.optimizer_start = [uniform_value(v) for v in self.model.optimizer.variables]

    def initialise(self, seed: int, hyper: rules.Hyperparameters) -> None:
        """Give the variables the state a model starts from: its seed decides the initial weights
        (a fresh build's, moved in one variable at a time); the optimizer starts afresh
        (:meth:`reset_optimizer`)."""
        keras = import_keras()
        keras.utils.set_random_seed(int(seed))
        fresh = build_model(*self.args)
        for var, value in zip(self.model.variables, fresh.variables):
            var.assign(value.value)
        del fresh
        self.reset_optimizer(hyper)

    def reset_optimizer(self, hyper: rules.Hyperparameters) -> None:
        """The optimizer's starting state, with the model's learning rate: it is an optimizer
        variable, so models that differ only in it share one compiled model."""
        keras = import_keras()
        for var, start in zip(self.model.optimizer.variables, self.optimizer_start):
            if var.path.endswith("learning_rate"):
                start = np.asarray(float(hyper.learning_rate), dtype=var.dtype)
            var.assign(start if isinstance(start, np.ndarray) else keras.ops.full(var.shape, start, var.dtype))

    def loader(self, warm: bool = False) -> StateAssembler:
        """An assembler that assigns each array of a stored state (its parts, see state_parts) to
        its variable the moment it is whole, so the state is never held twice. ``warm`` (the first
        hop of a warm-started model): the stored state is another run's final state of this
        architecture; only its model variables (the weights) are loaded, and :meth:`finish_load`
        starts the optimizer afresh (its own optimizer and learning rate)."""
        variables = state_variables(self.model)[: len(self.model.variables)] if warm else state_variables(self.model)

        def assign(index, array):
            value = to_backend([array])[0]
            # jax copies asynchronously: waiting here lets this array's bytes go before the next
            # one is read, and has every copy done before the first training step, which can
            # otherwise not reuse (donate) the loaded buffers and allocates the state anew
            # (a 0.7 GiB state: 2.26 vs 2.57 x the state at the peak, in half the runs, measured)
            if hasattr(value, "block_until_ready"):
                value.block_until_ready()
            variables[index].assign(value)

        return StateAssembler([(v.dtype, v.shape) for v in variables], assign, only_expected=warm)

    def finish_load(self, loader: StateAssembler, hyper: rules.Hyperparameters, warm: bool = False, hops: int | None = None) -> None:
        """Check a loaded state is whole and, unless ``warm``, that it has trained ``hops`` hops
        (MOP's invariant: a model's state is the product of exactly the hops the catalog records)."""
        loader.finish()
        if warm:
            self.reset_optimizer(hyper)
        elif hops is not None and loader.hops is not None and int(loader.hops) != int(hops):
            raise RuntimeError(f"the stored state has trained {loader.hops} hops, the catalog records {hops}")

    def load(self, arrays: list[np.ndarray], variables=None) -> None:
        variables = state_variables(self.model) if variables is None else variables
        if len(arrays) != len(variables):
            raise ValueError(f"model state has {len(arrays)} arrays, the model expects {len(variables)}")
        for var, value in zip(variables, arrays):
            if tuple(var.shape) != tuple(value.shape):
                raise ValueError(f"state shape {value.shape} does not fit variable {var.path} {tuple(var.shape)}")
        for var, value in zip(variables, to_backend(arrays)):
            var.assign(value)


def model_cache_key(arch, hyper: rules.Hyperparameters, shape, n_outputs, task, metric=None) -> str:
    blob = json.dumps([arch, hyper.model_key(), list(shape), n_outputs, task, rules.compiled_metric(task, metric)],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def compiled_model(GD, arch, hyper, stats: rules.PackStats, task, metric=None) -> CompiledModel:
    """The compiled model for (architecture, optimizer, the pack's input shape and classes, the
    run's metric), built once per backend."""
    cache = GD.setdefault("ctq.models", {})
    shape, n_outputs = input_shape(stats), int(stats.n_outputs)
    key = model_cache_key(arch, hyper, shape, n_outputs, task, metric)
    if key not in cache:
        cache[key] = CompiledModel(arch, hyper, shape, n_outputs, task, metric)
    return cache[key]


# ----------------------------------------------------------------------------------------------
# Packed data. Packing is SQL (sql_templates/<engine>/pack_*.sql): a pack table has rows
# (segment, bucket, rows, x, y, k): ``x`` the raw features of ``rows`` examples as big-endian
# float32 (``float4send``; or ``array_send`` of a float4[] for an array column), ``y`` the labels as
# big-endian float32, ``k`` each row's seeded int8 shuffle key. Segment -1 holds validation rows;
# bucket -1 is an empty marker row per segment (see ``data_cached``). The order of rows within and
# across buffers is whatever the scan produced: sorting by ``k`` here makes the shuffle
# reproducible. Normalisation (statistics from SQL, recorded in ctq.packs) and the class
# mapping are applied here, once per cache fill.


def decode_buffers(rows, stats: rules.PackStats, task: str):
    """Buffers -> (x float32 [n, input_dim] (or [n, *feature_shape]), y int32 class indices or
    float32 targets [n]). Categorical features arrive encoded by SQL (one-hot positions or
    indices, whose mean is 0 and std 1 in the stats: they are not normalised).

    ``rows`` are (rows, x, y, k) tuples of one segment; raises DataProblem if a buffer's byte
    length does not match its row count (e.g. NULL array elements).
    """
    d = int(stats.input_dim)
    xs, ys, ks = [], [], []
    for n, xb, yb, kb in rows:
        if n == 0:
            continue
        xs.append(decode_features(xb, n, stats))
        ys.append(np.frombuffer(yb, dtype=">f4"))
        ks.append(np.frombuffer(kb, dtype=">i8"))
    if not xs:
        x, y = np.zeros((0, d), np.float32), np.zeros((0,), np.float32)
    else:
        keys = np.concatenate(ks)
        order = np.argsort(keys, kind="stable")
        x = np.concatenate(xs)[order].astype(np.float32)
        y = np.concatenate(ys)[order].astype(np.float32)
    return normalise_features(x, stats), decode_labels(y, stats, task)


def decode_features(xb: bytes, n: int, stats: rules.PackStats) -> np.ndarray:
    """The bytes of ``n`` rows' features (what ``packing.feature_bytes_sql`` makes of each row,
    concatenated) -> raw float32 values [n, input_dim]; raises DataProblem if the byte length does
    not match (e.g. NULL array elements, arrays of another length)."""
    d = int(stats.input_dim)
    raw = np.frombuffer(xb, dtype=">f4")
    if stats.x_layout == "array":  # array_send: 20-byte header, then (int4 length, float4) pairs
        per_row = 5 + 2 * d
        if raw.size != n * per_row:
            raise DataProblem(f"an array feature has NULL elements or arrays of another length than {d}")
        return raw.reshape(n, per_row)[:, 6::2]
    if raw.size != n * d:
        raise DataProblem("a packed buffer does not hold rows x features values")
    return raw.reshape(n, d)


def normalise_features(x: np.ndarray, stats: rules.PackStats) -> np.ndarray:
    """Standardise features [n, input_dim] as packed with the training rows' mean and standard
    deviation recorded with the pack (``ctq export`` puts the same into a Normalization layer); a
    ``centred`` pack's numeric features come less their mean already (PackStats.centred)."""
    if stats.centred and stats.x_layout != "array":
        x = x / np.asarray(stats.std, np.float32)
    else:
        x = (x - np.asarray(stats.mean, np.float32)) / np.asarray(stats.std, np.float32)
    if stats.feature_shape:  # an array feature reshaped, e.g. images [n, 28, 28, 1]
        x = x.reshape((len(x),) + input_shape(stats))
    return x.astype(np.float32, copy=False)


def decode_labels(y: np.ndarray, stats: rules.PackStats, task: str) -> np.ndarray:
    """Labels as packed (float32 values, or class indices for text classes) -> int32 class indices,
    or, for regression, float32 targets standardised like the features (see in_target_units)."""
    y = y.astype(np.float32)
    if task == "classification" and stats.label_encoding == "index":  # text classes, indexed in SQL
        return y.astype(np.int32)
    if task == "classification":
        return np.searchsorted(np.asarray(stats.class_values, np.float32), y).astype(np.int32)
    if stats.target_std:
        mean = 0.0 if stats.centred else stats.target_mean  # a centred pack's targets come less it
        return ((y - np.float32(mean)) / np.float32(stats.target_std)).astype(np.float32)
    return y


def data_cached(GD, pack_id: str, segment: int) -> bool:
    """True when this backend holds the decoded data of (pack, segment): the targeted query then
    skips the buffer rows (only the marker row reaches the aggregate) and nothing is re-read."""
    return (pack_id, int(segment)) in GD.get("ctq.data", {})


def cache_segment_data(GD, pack_id: str, segment: int, rows_by_segment: dict, stats: rules.PackStats, task: str):
    """Decode the buffers an aggregate received (its own segment's and the validation rows) into
    the backend's cache, dropping the data of any other pack."""
    cache = GD.setdefault("ctq.data", {})
    for old in [k for k in cache if k[0] != pack_id]:
        del cache[old]
    for seg in (int(segment), -1):
        cache[(pack_id, seg)] = decode_buffers(rows_by_segment.get(seg, []), stats, task)
    return cache[(pack_id, int(segment))], cache[(pack_id, -1)]


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
                deliver_interrupts(plpy)

        on_train_batch_end = _check
        on_test_batch_end = _check
        on_predict_batch_end = _check

    return CancelCheck()


def step_transition(*, plpy, GD, acc, segment, bucket, rows, x, y, k, part, part_offset, part_data, params):
    """Transition function of the ``ctq.train_step`` aggregate: collect this segment's buffer rows,
    or, when streaming, train on (and evaluate) each buffer as it arrives; a row of the model's
    stored state (``part``, see state_parts) goes straight into the model's variables.

    The heavy state lives in ``GD`` (an aggregate state of type text is only its key): passing
    arrays through the aggregate state would convert them on every row. A backend runs one query
    at a time, so an accumulator left over is from a query that failed: it is dropped.
    """
    accumulators = GD.setdefault("ctq.acc", {})
    if acc is None or acc not in accumulators:
        accumulators.clear()
        GD.pop("ctq.trained", None)  # a new query: the last hop's state was stored, or never will be
        GD["ctq.acc_seq"] = GD.get("ctq.acc_seq", 0) + 1
        acc = str(GD["ctq.acc_seq"])
        accumulators[acc] = {"params": rules.HopRequest.from_json(params), "segment": None, "rows": {},
                             "stream": None, "loader": None, "started": time.time()}
    entry = accumulators[acc]
    if part is not None:
        load_part(GD, entry, part, part_offset, part_data)
        return acc
    if segment >= 0:
        entry["segment"] = int(segment)
    if bucket >= 0:
        if entry["params"].stream:
            stream_buffer(plpy, GD, entry, int(segment), (rows, x, y, k))
        else:
            entry["rows"].setdefault(int(segment), []).append((rows, x, y, k))
    return acc


def load_part(GD, entry, index: int, offset: int, data) -> None:
    """Put one part of the model's stored state into its compiled model's variables."""
    if entry["loader"] is None:
        p = entry["params"]
        cm = compiled_model(GD, p.arch, p.hyper, p.stats, p.task, p.metric)
        entry["loader"] = cm.loader(p.warm)
    entry["loader"].add(index, offset, data)


def start_model(plpy, GD, cm: CompiledModel, entry) -> None:
    """Give ``cm`` the state this hop starts from: its checkpoint's parts loaded by the transition,
    its working state's file, or, for a model with no hop yet, its initial state. StateLost for a
    model the catalog says has trained but whose state after those hops is not stored (it would
    silently start over)."""
    p = entry["params"]
    hops, warm = p.hops, p.warm
    if entry["loader"] is None and hops and not warm:
        load_working_state(plpy, GD, cm, entry)
    if entry["loader"] is not None:
        cm.finish_load(entry["loader"], p.hyper, warm, hops)
    elif hops:
        raise StateLost(f"the catalog records {hops} hops of this model but its state after them is not stored")
    elif warm:  # starting from scratch instead would train a model the run says is warm-started
        raise RuntimeError("the state this model is warm-started from is not stored")
    else:
        cm.initialise(p.seed, p.hyper)


def hand_over(GD, entry, acc, cm: CompiledModel) -> dict:
    """The new state of a trained hop: kept in the backend for :func:`trained_state_part` (the
    hop statement stores it as parts, named by ``state_key``; ``state_parts``: how many)."""
    variables = state_variables(cm.model)
    bounds = part_bounds(variables)
    GD["ctq.trained"] = {"key": acc, "variables": variables, "hops": entry["params"].hops + 1, "bounds": bounds}
    return {"state_key": acc, "state_parts": len(bounds) + 1}


def _trained(GD, key) -> dict:
    """What :func:`hand_over` kept of the state the hop ``key`` just trained."""
    trained = GD.get("ctq.trained")
    if trained is None or trained["key"] != key:
        raise RuntimeError("no trained state to store for this hop")
    return trained


def trained_state_part(*, GD, key, number):
    """Part ``number`` (:func:`state_part`) of the state the hop ``key`` just trained."""
    trained = _trained(GD, key)
    return state_part(trained["variables"], trained["hops"], int(number), trained["bounds"])


def trained_state_parts(*, GD, key):
    """The parts of the state the hop ``key`` just trained, header first, one at a time."""
    trained = _trained(GD, key)
    for number in range(len(trained["bounds"]) + 1):
        yield state_part(trained["variables"], trained["hops"], number, trained["bounds"])


def stored_parts(plpy, GD, key):
    """``ctq.state_parts``: :func:`trained_state_parts` with the server's signals held while each
    part is made, and failures as SQL errors (see :func:`call`)."""
    parts = trained_state_parts(GD=GD, key=key)
    while True:
        try:
            with signals_held():
                part = next(parts)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - reported as the model's failure
            raise_sql(plpy, model_error_text(exc), SQLSTATE_MODEL)
        yield part


# Working states on file (the PostgreSQL engine: sql_templates/working_states_files.sql). A
# hop's new state is the only heavy write of a run, rewritten by every hop; into the heap it goes
# through TOAST's 2 KB chunks and their index (50 MiB: 0.10-0.25 s to write, 0.06-0.13 s to read
# on this project's 2-core machine), to a file at the speed of the page cache (0.02-0.05 s and
# 0.03 s). Files live in the server's data directory (a backend's working directory), one per
# state: ctq_states/<database oid>/<run>/<model>.<hops>, written under a temporary name and
# renamed, so a file is whole or absent. Like an UNLOGGED table they are outside WAL (and so
# outside backups and standbys); unlike one they survive a server crash: only an operating-system
# crash can leave a file that was never flushed, so a file written before the host's last boot is
# not trusted (its boot id is in its header) and the model goes back to its checkpoint.
WORKING_STATE_MAGIC = b"CTQWS\x01\n"
_RECORD = struct.Struct("<iqq")  # array_index, byte_offset, length of one part
_BOOT_ID_BYTES = 36


def boot_id() -> bytes:
    """The host's boot id (Linux), padded to 36 bytes; blanks where the system has none (then a
    file is trusted whatever its boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip()[:_BOOT_ID_BYTES].ljust(_BOOT_ID_BYTES)
    except OSError:
        return b" " * _BOOT_ID_BYTES


def working_state_dir(plpy, GD, run: int) -> str:
    """This database's folder of run ``run``'s working states, under the data directory."""
    oid = GD.get("ctq.database_oid")
    if oid is None:
        oid = GD["ctq.database_oid"] = int(plpy.execute(
            "SELECT oid::int8 AS oid FROM pg_database WHERE datname = current_database()")[0]["oid"])
    return os.path.join(os.getcwd(), "ctq_states", str(oid), str(int(run)))


def working_state_path(plpy, GD, run: int, model: int, hops: int) -> str:
    """The file of the model's working state after ``hops`` hops."""
    return os.path.join(working_state_dir(plpy, GD, run), f"{int(model)}.{int(hops)}")


def run_access(plpy, run: int) -> tuple[bool, bool]:
    """(may read, may change) run ``run``, for the calling role, as row-level security decides
    (row_security.sql: the owner and ctq_admin change a run, roles it is shared with read it)."""
    plan = plpy.prepare("SELECT ctq.can_change_run(run_by) AS change FROM ctq.runs WHERE run_id = $1", ["int8"])
    rows = plpy.execute(plan, [int(run)])
    return (len(rows) == 1, bool(rows and rows[0]["change"]))


def committed_hops(plpy, run: int, model: int) -> int:
    """The hops the catalog records for the model: the state a reader may use has trained as many
    (a file of more hops is from a hop statement that did not commit)."""
    plan = plpy.prepare("SELECT count(*)::int AS n FROM ctq.hops WHERE run_id = $1 AND model_id = $2", ["int8", "int4"])
    return int(plpy.execute(plan, [int(run), int(model)])[0]["n"])


def _state_files(folder: str, model: int) -> dict[int | str, str]:
    """hops -> path of the model's state files in ``folder``; a temporary file's name -> its path
    (one a backend killed while writing left)."""
    found: dict[int | str, str] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found
    prefix = f"{int(model)}."
    for name in names:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            found[int(rest) if rest.isdigit() else name] = os.path.join(folder, name)
    return found


def store_working_state(*, plpy, GD, key, run, model, hops) -> int:
    """``ctq.store_working_state``: write the state the hop ``key`` just trained (hops: the hops it
    has trained) to its file; returns its parts. Files of the model older than the state this hop
    started from are deleted (that one stays until this hop commits: a hop that fails leaves the
    model where the catalog says it is). Refused (42501) to a role that may not change the run."""
    if not run_access(plpy, run)[1]:
        raise_sql(plpy, f"permission denied for run {int(run)}", "42501")
    path = working_state_path(plpy, GD, run, model, hops)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # (a model trains on one segment at a time: no other hop writes or deletes its files now)
    stale = {older: file for older, file in _state_files(os.path.dirname(path), model).items()
             if isinstance(older, str) or older < int(hops) - 1}
    parts = write_state_file(path, stored_parts(plpy, GD, key),
                             reuse=next((file for older, file in stale.items() if isinstance(older, int)), None))
    for file in stale.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file)
    return parts


def write_state_file(path: str, parts, reuse: str | None = None) -> int:
    """Write ``parts`` (state_parts) as the state file ``path``: under a temporary name, then
    renamed, so that the file is whole or absent (a write that fails, e.g. on a full disk, leaves
    no part of it taking space). Returns the parts written.

    ``reuse``: a stale state file of the same model, rewritten in place rather than a new file
    made, where no reader holds it (:func:`_take_over`): its pages are in the page cache and its
    blocks allocated, so the write is a copy (PostgreSQL recycles its WAL segments for the same
    reason). A 50 MiB state on this project's 2-core VM: 0.01 s rewritten, 0.10-0.15 s as a new
    file, measured in the hops of bench/model_size.py."""
    temporary = f"{path}.{os.getpid()}.tmp"
    written = 0
    try:
        with (reuse and _take_over(reuse, temporary)) or open(temporary, "wb") as f:
            f.write(WORKING_STATE_MAGIC + boot_id())
            for index, offset, data in parts:
                f.write(_RECORD.pack(index, offset, len(data)))
                f.write(data)
                written += 1
            f.truncate()  # a reused file may have been longer (a header's hop count of fewer digits)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return written


def _take_over(stale: str, temporary: str):
    """The state file ``stale``, renamed ``temporary`` and open for rewriting, or None where a
    reader holds it (read_state_file's shared lock: its bytes must not change under that reader,
    who gets them whole) or it is gone. A reader that opened it before the rename finds, once it
    has the lock, that its name no longer leads to that file, as if it had been deleted."""
    try:
        f = open(stale, "r+b")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(stale, temporary)
    except OSError:  # held (BlockingIOError), or deleted meanwhile
        f.close()
        return None
    return f


def read_state_file(path: str):
    """Yield the parts (array_index, byte_offset, bytes) of a state file, or nothing for a file
    that is not whole or was written before the host's last boot (see WORKING_STATE_MAGIC)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_SH)  # while this reads, no writer reuses the file (_take_over)
        try:
            if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:  # taken over before the lock: gone
                return
        except FileNotFoundError:
            return
        if f.read(len(WORKING_STATE_MAGIC)) != WORKING_STATE_MAGIC or f.read(_BOOT_ID_BYTES) != boot_id():
            return
        size = os.fstat(f.fileno()).st_size
        records, position = [], f.tell()
        while position < size:  # check the whole file's structure before the first part goes out
            head = f.read(_RECORD.size)
            if len(head) < _RECORD.size:
                return
            index, offset, length = _RECORD.unpack(head)
            records.append((index, offset, length, position + _RECORD.size))
            position = f.seek(position + _RECORD.size + length)
        if position != size or not records:
            return
        for index, offset, length, start in records:
            f.seek(start)
            yield index, offset, f.read(length)


def working_state_parts(*, plpy, GD, run, model):
    """``ctq.working_state_parts``: the parts of the model's working state, (hops, array_index,
    byte_offset, data), if its file holds the state after the hops the catalog records; nothing
    otherwise (none yet, a checkpoint is newer, the file is not whole, or the caller may not read
    the run: row-level security hides its hops).

    A reader whose snapshot is older than the model's last hops finds that file gone: each hop
    deletes its model's files older than the state it started from, and ``ctq predict`` of a
    running run reads in a snapshot taken before its segments import Keras, seconds earlier (a
    user trial: 11 of 11 tries failed, 'model state is incomplete'). Such a reader gets the
    newest whole file instead: the model's weights so far, which is what scoring a model in
    training promises (its hop may commit yet), unless the state of its count is a checkpoint,
    which ctq.current_state_parts reads. Training reads its exact state (load_working_state)."""
    hops = committed_hops(plpy, run, model)
    if hops < 1:
        return
    candidates = [hops]
    if not os.path.exists(working_state_path(plpy, GD, run, model, hops)) and not checkpointed(plpy, run, model, hops):
        candidates += sorted((h for h in _state_files(working_state_dir(plpy, GD, run), model)
                              if isinstance(h, int) and h > hops), reverse=True)
    for at in candidates:
        found = False
        for index, offset, data in read_state_file(working_state_path(plpy, GD, run, model, at)):
            found = True
            yield at, index, offset, data
        if found:
            return


def checkpointed(plpy, run: int, model: int, hops: int) -> bool:
    """Whether the model's checkpoint is its state after ``hops`` hops."""
    plan = plpy.prepare("SELECT EXISTS (SELECT 1 FROM ctq.model_states WHERE run_id = $1 AND model_id = $2 "
                        "AND hops = $3) AS found", ["int8", "int4", "int4"])
    return bool(plpy.execute(plan, [int(run), int(model), int(hops)])[0]["found"])


def load_working_state(plpy, GD, cm: CompiledModel, entry) -> None:
    """Put the model's working state (its file) into ``cm``'s variables, read by the hop's own
    backend: its parts never pass through SQL, whose conversions cost more than the file (a 50 MiB
    state through the set-returning function: 0.15-0.2 s; the file: 0.03 s). The hop's parameters
    name run and model (``state_file``: given where working states are files); the state is the
    one after the hops the catalog records, as the caller sees them (working_state_parts).
    Nothing is loaded where there is none (start_model then raises StateLost)."""
    p = entry["params"]
    if not p.state_file:
        return
    (run, model), hops = p.state_file, p.hops
    if committed_hops(plpy, run, model) != hops:
        return
    loader = None
    for index, offset, data in read_state_file(working_state_path(plpy, GD, run, model, hops)):
        loader = loader or cm.loader()
        loader.add(index, offset, data)
    entry["loader"] = loader


def adopt_row_working_states(*, plpy, GD) -> int:
    """``ctq.adopt_row_working_states`` (``ctq install``, in its transaction, after the server code):
    each model's working state that an earlier ctq kept as rows of the unlogged ``ctq.hop_states``
    and that is its state after the hops the catalog records becomes its file, as a hop would have
    written it; then the table is dropped. Returns the states adopted. (The install dropped the
    table: an interrupted run resumed from its checkpoints, or from the start, training again up
    to 95 % of its hops, and said a crash had lost them: a user trial of an upgrade.)"""
    if plpy.execute("SELECT to_regclass('ctq.hop_states') IS NULL AS gone")[0]["gone"]:
        return 0
    states = plpy.execute(
        f"SELECT s.run_id, s.model_id, s.hops FROM ctq.hop_states s WHERE s.array_index = {HEADER_PART} AND s.hops = "
        "(SELECT count(*) FROM ctq.hops h WHERE h.run_id = s.run_id AND h.model_id = s.model_id)")
    plan = plpy.prepare("SELECT array_index, byte_offset, data FROM ctq.hop_states WHERE run_id = $1 AND "
                        "model_id = $2 AND hops = $3 ORDER BY array_index, byte_offset", ["int8", "int4", "int4"])

    def parts(cursor):
        while rows := cursor.fetch(4):  # parts of up to 16 MiB: a few at a time
            for row in rows:
                yield row["array_index"], row["byte_offset"], row["data"]

    for state in states:
        run, model, hops = int(state["run_id"]), int(state["model_id"]), int(state["hops"])
        path = working_state_path(plpy, GD, run, model, hops)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_state_file(path, parts(plpy.cursor(plan, [run, model, hops])))
    plpy.execute("DROP TABLE ctq.hop_states")
    return len(states)


def has_working_state(*, plpy, GD, run, model, hops) -> bool:
    """``ctq.has_working_state``: whether the model's state after ``hops`` hops is on file, whole."""
    return next(iter(read_state_file(working_state_path(plpy, GD, run, model, hops))), None) is not None


def drop_working_states(*, plpy, GD, run, model=None) -> int:
    """``ctq.drop_working_states``: delete the working-state files of run ``run`` (of one model,
    or all); returns how many. Refused (42501) to a role that may not change the run (so they are
    dropped before the run's rows, as ``ctq rm`` does)."""
    if not run_access(plpy, run)[1]:
        raise_sql(plpy, f"permission denied for run {int(run)}", "42501")
    folder = working_state_dir(plpy, GD, run)
    paths = _state_files(folder, model).values() if model is not None else (
        [os.path.join(folder, n) for n in os.listdir(folder)] if os.path.isdir(folder) else [])
    dropped = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            dropped += 1
    if model is None:
        with contextlib.suppress(OSError):
            os.rmdir(folder)
    return dropped


def stream_buffer(plpy, GD, entry, segment: int, buffer) -> None:
    """Streaming (a segment whose data does not fit its memory budget): fit one training buffer,
    or evaluate one validation buffer, as the scan delivers it; nothing is cached. The query sends
    the segment's own buffers first (ORDER BY segment DESC), so evaluation follows training."""
    p = entry["params"]
    if p.action != "train" or (segment < 0 and not p.evaluate):
        return
    run = entry["stream"]
    if run is None:
        pin_threads(p.cores)
        cm = compiled_model(GD, p.arch, p.hyper, p.stats, p.task, p.metric)
        start_model(plpy, GD, cm, entry)
        run = entry["stream"] = {"model": cm, "callback": cancel_callback(plpy), "compute": 0.0,
                                 "train": [0, 0.0, 0.0], "val": [0, 0.0, 0.0]}
    x, y = decode_buffers([buffer], p.stats, p.task)
    t0 = time.perf_counter()
    if segment >= 0:
        loss, metric = fit_pass(run["model"].model, x, y, p.hyper.batch_size,
                                run["callback"], p.task, p.stats, p.class_weights, p.metric, run["model"].penalised)
        if loss is not None:
            n = len(x)
            run["train"] = [run["train"][0] + n, run["train"][1] + loss * n, run["train"][2] + metric * n]
    elif len(x):
        result = run["model"].model.evaluate(x, y, batch_size=1024, verbose=0, return_dict=True,
                                             callbacks=[run["callback"]])
        loss, metric = in_target_units(float(result["loss"]), float(result[rules.compiled_metric(p.task, p.metric)]),
                                       p.task, p.stats)
        run["val"] = [run["val"][0] + len(x), run["val"][1] + loss * len(x), run["val"][2] + metric * len(x)]
        if rules.compiled_metric(p.task, p.metric) in rules.RANKING_KINDS:  # not a mean over rows: kept whole
            run.setdefault("val_predictions", []).append((y, run["model"].model.predict(x, batch_size=1024,
                                                                                        verbose=0)))
    run["compute"] += time.perf_counter() - t0


def stream_result(GD, entry, acc) -> dict:
    """The hop's result after streaming: row-weighted means over the buffers."""
    run = entry["stream"]
    if run is None:
        raise DataProblem("the targeted query reached none of its segment's buffers (the pack is incomplete)")
    (n, loss, metric), (nv, val_loss, val_metric) = run["train"], run["val"]
    if run.get("val_predictions"):  # AUC, F1...: over all the validation rows, not a mean of buffers
        p = entry["params"]
        scorer = make_metric(p.task, p.metric, int(p.stats.n_outputs))
        scorer.update_state(np.concatenate([y for y, _ in run["val_predictions"]]),
                            np.concatenate([q for _, q in run["val_predictions"]]))
        val_metric = float(scorer.result()) * nv
    return {**hand_over(GD, entry, acc, run["model"]), "estimates": None, "loss": loss / n if n else None,
            "metric": metric / n if n else None, "rows": n, "compute_seconds": run["compute"],
            "val_loss": val_loss / nv if nv else None, "val_metric": val_metric / nv if nv else None}


def execution_segment(plpy, targeted: int) -> int:
    """The segment this function runs on, as the engine says from inside (``ctq.execution_segment``,
    defined per engine in its hop_functions.sql: Greenplum's content id; on PostgreSQL the virtual
    segment ``targeted``)."""
    return int(plpy.execute(f"SELECT ctq.execution_segment({int(targeted)}) AS s")[0]["s"])


def step_final(*, plpy, GD, acc):
    """Final function of ``ctq.train_step``: warm up, or train one sub-epoch (a hop) on the data of
    the segment the targeted query ran on; its metrics, and the new state's key (``state_key``:
    the state stays in the backend for :func:`trained_state_parts`).

    The data is decoded on the first query of a backend and cached in ``GD``; later queries skip
    the buffer rows (``data_cached`` in their WHERE clause), so a hop reads no table data.
    ``executed_on`` is the segment that ran this function, from the engine's own point of view
    (:func:`execution_segment`), recorded with the hop to prove direct dispatch.
    """
    entry = GD.get("ctq.acc", {}).pop(acc, None) if acc is not None else None
    if entry is None or entry["segment"] is None:
        raise DataProblem("the targeted query reached none of its segment's rows (the pack is incomplete)")
    p, segment = entry["params"], entry["segment"]
    started = entry["started"]  # the first row: reading the state is part of the hop
    pin_threads(p.cores)
    executed_on = execution_segment(plpy, segment)
    stats = p.stats
    if p.stream:
        result = {"estimates": None, "state_key": None, "state_parts": None, "loss": None, "metric": None,
                  "rows": 0, "compute_seconds": 0.0, "val_loss": None, "val_metric": None}
        if p.action == "warmup":
            for arch, hyper in p.models:
                compiled_model(GD, arch, hyper, stats, p.task, p.metric)
        else:
            result = stream_result(GD, entry, acc)
        return {**result, "executed_on": executed_on, "hop_started": started, "hop_finished": time.time()}
    if entry["rows"] or not data_cached(GD, p.pack_id, segment):
        (x, y), (xv, yv) = cache_segment_data(GD, p.pack_id, segment, entry["rows"], stats, p.task)
    else:
        (x, y), (xv, yv) = GD["ctq.data"][(p.pack_id, segment)], GD["ctq.data"][(p.pack_id, -1)]
    task = p.task
    result = {"estimates": None, "state_key": None, "state_parts": None, "loss": None, "metric": None,
              "rows": int(len(x)), "compute_seconds": 0.0, "val_loss": None, "val_metric": None,
              "executed_on": executed_on}
    if p.action == "warmup":  # the estimated hop seconds of each model, as JSON
        estimates = [compile_steps(compiled_model(GD, arch, hyper, stats, task, p.metric),
                                   hyper, len(x), xv, yv, plpy, p.class_weights)
                     for arch, hyper in p.models]
        result["estimates"] = json.dumps(estimates).encode()
    else:
        cm = compiled_model(GD, p.arch, p.hyper, stats, task, p.metric)
        start_model(plpy, GD, cm, entry)
        result.update(train_hop(plpy=plpy, cm=cm, x=x, y=y, xv=xv, yv=yv, hyper=p.hyper, task=task,
                                evaluate=p.evaluate, stats=stats, class_weights=p.class_weights,
                                metric=p.metric))
        result.update(hand_over(GD, entry, acc, cm))
    result["hop_started"], result["hop_finished"] = started, time.time()
    return result


def padded(x, y, batch: int, class_weights=None):
    """(x, y, sample weights) padded with zero-weight rows to a whole number of batches: every row
    trains, and every batch has the same shape (under jax a new shape is a new compile). With
    ``class_weights`` (per class index), a row weighs its class's weight."""
    pad = (-len(x)) % batch
    weights = np.ones(len(x) + pad, np.float32)
    if class_weights is not None:
        weights[: len(x)] = np.asarray(class_weights, np.float32)[y]
    if pad:
        weights[len(x):] = 0.0
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        y = np.concatenate([y, np.zeros((pad,) + y.shape[1:], y.dtype)])
    return x, y, weights


def fit_pass(model, x, y, batch: int, callback, task: str, stats: rules.PackStats, class_weights=None, metric=None,
             penalised: bool = False):
    """One pass over (x, y); returns (loss, metric) in the target's own units, or Nones for no rows.
    A batch size larger than the rows is the rows, one batch, as Keras's fit takes it: padded to
    the batch size instead, every step's gradient would be diluted by rows / batch (Keras divides
    a batch's loss by its rows, padding included: a model that cannot learn), and the padding
    allocated (a batch of 10^8 rows on a 500-row segment took the server down, found by a user
    trial). A segment's rows are the same at every hop: still one program per backend.
    Both are over the real rows, as Keras reports a pass over (x, y) without padding: Keras's loss
    is sum(weight x loss) / rows seen, padding rows included, so it is rescaled to the real rows;
    the metric counts the real rows only (:func:`make_metric`). With class weights the loss is the
    weighted one and the metric is not weighted, as Keras reports them.
    A ``penalised`` model (weight penalties, :attr:`CompiledModel.penalised`) trains unpadded, as
    Keras does: Keras adds the penalty to every batch's loss, so a padded last batch would weigh
    its rows' loss by rows / batch against a whole penalty, and the rescale would scale the
    penalty too (its reported loss came out up to 2x for a segment under two batches). The
    remainder batch is one more program, compiled by the warm-up (:func:`compile_steps`)."""
    if not len(x):
        return None, None
    batch = min(batch, len(x))
    if penalised:
        weights = None if class_weights is None else np.asarray(class_weights, np.float32)[y]
        history = model.fit(x, y, sample_weight=weights, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                            callbacks=[callback])
        loss = float(history.history["loss"][-1])
    else:
        xp, yp, weights = padded(x, y, batch, class_weights)
        history = model.fit(xp, yp, sample_weight=weights, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                            callbacks=[callback])
        loss = float(history.history["loss"][-1]) * len(xp) / len(x)
    value = float(history.history[rules.compiled_metric(task, metric)][-1])
    if not np.isfinite(loss):
        raise ModelFailure(f"training diverged: loss is {loss}")
    return in_target_units(loss, value, task, stats)


EVALUATION_BATCH = 1024  # rows of a validation batch


def validation_pass(cm: CompiledModel, xv, yv, callback) -> tuple[float, dict]:
    """Keras's evaluate of ``cm`` over the validation rows (xv, yv) through one compiled program:
    (the loss of the real rows, Keras's whole result; raw units, see :func:`in_target_units`).

    The loss is the data's alone, as ``ctq evaluate`` computes it on the same rows: Keras's adds
    the model's weight penalties (regularizers) to every batch's, so a run ranked on val_loss put
    a model with an l2 penalty behind one with a higher loss on the validation rows (a user
    trial: 8.98 recorded, 3.75 evaluated, scaled to the target's units with the data's loss). The
    penalty is the same for every batch (the weights do not change), so it is subtracted once.
    The training loss keeps it (Keras's, what the optimizer minimises).

    Batches of ``EVALUATION_BATCH`` rows (all the rows when fewer), the last one padded with rows
    of weight 0 as :func:`padded` pads training, so that the warm-up compiles one evaluation step
    rather than one for whole batches and one for the rest (a compile of 0.3-0.5 s a backend in a
    first run, measured on the 4.3M-parameter grid of bench/model_size.py). Keras's loss is
    sum(weight x loss) / rows seen, so it is rescaled to the real rows, and the compiled metric
    counts only rows of positive weight (:func:`make_metric`). A model with weight penalties
    (regularizers) is not padded: Keras adds the penalty to each batch's loss, and the rescale
    would scale it too."""
    batch = min(EVALUATION_BATCH, len(xv))
    if cm.penalised:
        result = cm.model.evaluate(xv, yv, batch_size=batch, verbose=0, return_dict=True, callbacks=[callback])
        penalty = sum(float(np.asarray(term)) for term in cm.model.losses)
        return float(result["loss"]) - penalty, result
    xp, yp, weights = padded(xv, yv, batch)
    result = cm.model.evaluate(xp, yp, sample_weight=weights, batch_size=batch, verbose=0, return_dict=True,
                               callbacks=[callback])
    return float(result["loss"]) * len(xp) / len(xv), result


def in_target_units(loss, metric, task: str, stats: rules.PackStats):
    """Regression trains on standardised targets; report mse and mae in the target's units."""
    scale = float(stats.target_std or 1.0) if task == "regression" else 1.0
    return loss * scale * scale, metric * scale


TIMED_STEPS = 4  # batches of the warm-up's longer timed pass per model, after the compile


def compile_steps(cm: CompiledModel, hyper: rules.Hyperparameters, rows: int, xv, yv, plpy,
                  class_weights=None) -> float:
    """Warm-up: have jax compile the train step for this batch shape and the evaluation steps for
    the validation set's shapes now, on every segment at once, rather than inside the first hop of
    each model on each segment (0.6-0.9 s each, measured): each program a hop runs, as
    fit_pass and validation_pass call them (with or without sample weights, the remainder batch
    of a penalised model, one evaluation batch). Passes of rows of zeros (of weight 0 where
    weighted); the state they leave is overwritten by the next hop's ``load`` or ``initialise``.

    Returns the estimated seconds of a hop of this model over ``rows`` rows: a pass's fixed cost
    plus its cost per batch, from two timed passes after the compile (one batch, and up to
    ``TIMED_STEPS``), scaled to the hop's number of batches (evaluation, once an epoch, is left
    out). The cost-aware scheduler orders models by it before their first hop is timed, and
    rescales it by what the models' hops then take (ctq.scheduler): one timing of each is enough
    to rank them, and a large model's batch is costly (a 170M-parameter Adam step: about a second)."""
    callback = cancel_callback(plpy)
    _, shape, _, task = cm.args
    batch = min(hyper.batch_size, rows)  # as the hops will train (fit_pass); 0 for a segment without rows
    # fit_pass passes sample weights but for a penalised model without class weights: another program
    weighted = not cm.penalised or class_weights is not None
    cm.reset_optimizer(hyper)  # a first hop's initialise stages its learning rate: one more program

    def zero_pass(n: int, size: int = batch) -> float:
        labels = np.zeros((n * size,), np.float32 if task == "regression" else np.int32)
        weights = np.zeros((n * size,), np.float32) if weighted else None
        t0 = time.perf_counter()
        cm.model.fit(np.zeros((n * size,) + shape, np.float32), labels, sample_weight=weights, batch_size=size,
                     epochs=1, shuffle=False, verbose=0, callbacks=[callback])
        return time.perf_counter() - t0

    if rows:
        zero_pass(1)
        if cm.penalised and rows % batch:  # trained unpadded (fit_pass): its remainder batch too
            zero_pass(1, rows % batch)
    if len(xv):  # one batch compiles the step every batch runs (a penalised model's remainder too)
        one_batch = len(xv) if cm.penalised else min(EVALUATION_BATCH, len(xv))
        validation_pass(cm, xv[:one_batch], yv[:one_batch], callback)
    if not rows:
        return 0.0
    batches = -(-rows // batch)
    one = zero_pass(1)
    steps = max(1, min(TIMED_STEPS, batches))
    if steps == 1:
        return one
    return hop_estimate(one, zero_pass(steps), steps, batches)


def hop_estimate(one: float, many: float, steps: int, batches: int) -> float:
    """Seconds of a hop of ``batches`` batches from a timed pass of 1 batch (``one`` s) and one of
    ``steps`` > 1 batches (``many`` s): a pass's fixed cost plus the slope per batch. A pass slowed
    by the load (the other segments compile meanwhile) can make the longer pass no longer than the
    short one: a slope of 0 would price every batch at nothing and rank a large model as the
    cheapest, served last by the cost-aware rule; the longer pass's mean per batch is taken then."""
    slope = (many - one) / (steps - 1)
    per_batch = slope if slope > 0 else many / steps
    return max(one - per_batch, 0.0) + per_batch * batches


def train_hop(*, plpy, cm: CompiledModel, x, y, xv, yv, hyper, task, evaluate, stats, class_weights=None,
              metric=None):
    """Train one sub-epoch of ``cm`` (holding the hop's starting state, see start_model) over
    (x, y); evaluate on (xv, yv) when ``evaluate``. Batches have a constant shape (one jit compile
    per shape): the last partial batch is padded with zero-weight rows, so every row trains."""
    callback = cancel_callback(plpy)
    t0 = time.perf_counter()
    loss, value = fit_pass(cm.model, x, y, hyper.batch_size, callback, task, stats, class_weights,
                           metric, cm.penalised)
    compute = time.perf_counter() - t0
    val_loss = val_metric = None
    if evaluate and len(xv):
        t1 = time.perf_counter()
        loss_v, result = validation_pass(cm, xv, yv, callback)
        compute += time.perf_counter() - t1
        val_loss, val_metric = in_target_units(loss_v, float(result[rules.compiled_metric(task, metric)]), task, stats)
    return {"loss": loss, "metric": value, "rows": int(len(x)), "compute_seconds": compute, "val_loss": val_loss,
            "val_metric": val_metric}


# ----------------------------------------------------------------------------------------------
# Scoring (ctq predict, ctq evaluate): the aggregate ``ctq.score_step`` over the rows of one
# segment. Each row brings its features as the bytes packing writes (and, to evaluate, its label);
# one header row per query brings the model's state and the parameters, so that they are not
# converted again for every row. The rows are decoded, normalised and fed to the model exactly as
# in training (decode_features, normalise_features, compiled_model).

EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to it in the cross-entropy


def score_transition(*, GD, acc, x, y, part, part_offset, part_data, params):
    """Transition function of ``ctq.score_step``: keep the header row's parameters, the parts of
    the model's stored state (see :func:`state_parts`), and each other row's feature (and label)
    bytes, in input order.

    It runs once per row, so it does the least it can and cannot fail: it is called without
    :func:`call` (holding and releasing the signals costs about 0.1 ms a call, measured: more than
    the rest of scoring) and leaves the checks to :func:`score_final`. It starts no threads."""
    accumulators = GD.setdefault("ctq.score_acc", {})
    if acc is None or acc not in accumulators:
        accumulators.clear()  # one query at a time per backend: a leftover is from a failed query
        GD["ctq.acc_seq"] = GD.get("ctq.acc_seq", 0) + 1
        acc = str(GD["ctq.acc_seq"])
        accumulators[acc] = {"x": [], "y": [], "parts": [], "params": None}
    entry = accumulators[acc]
    if params is not None:
        entry["params"] = params
    elif part is not None:
        entry["parts"].append((part, part_offset, part_data))
    else:
        entry["x"].append(x)
        entry["y"].append(y)
    return acc


def score_final(*, plpy, GD, acc):
    """Final function of ``ctq.score_step``: score the segment's rows with the model.

    Returns ``rows``; ``prediction`` per row in input order (a class index, or a regression value in
    the target's units); with ``proba``, the class probabilities of every row, flat (rows x classes);
    to ``evaluate``, the mean loss (cross-entropy of the probabilities, clipped to [1e-7, 1 - 1e-7]
    as Keras does, or mean squared error in the target's units) and metric (accuracy or mean
    absolute error) over the rows. Regularisation terms are not in the loss. Raises DataProblem for
    a missing label or non-finite features; a query that ran on another segment than the one it
    was sent to is refused.
    """
    entry = GD.get("ctq.score_acc", {}).pop(acc, None) if acc is not None else None
    if entry is None or entry["params"] is None:
        raise DataProblem("the scoring query reached no header row (the scoring stage is incomplete)")
    p = rules.ScoreRequest.from_json(entry["params"])
    stats, task = p.stats, p.task
    if any(v is None for v in entry["x"]):
        raise DataProblem("a row to score has a NULL feature")
    pin_threads(p.cores)
    executed_on = execution_segment(plpy, p.segment)
    if executed_on != p.segment:
        raise RuntimeError(f"scoring query sent to segment {p['segment']} ran on segment {executed_on}")
    n = len(entry["x"])
    result = {"rows": n, "prediction": [], "probabilities": None, "loss": None, "metric": None,
              "metric_state": None, "executed_on": executed_on}
    if n == 0:
        return result
    x = normalise_features(decode_features(b"".join(entry["x"]), n, stats), stats)
    if not np.isfinite(x).all():
        raise DataProblem("a feature has NaN or infinite values")
    cm = compiled_model(GD, p.arch, p.hyper, stats, task, p.metric)
    loader = cm.loader()
    parts = entry.pop("parts")
    parts.reverse()
    while parts:  # each part let go of once in its variable: the state is never held twice
        loader.add(*parts.pop())
    cm.finish_load(loader, p.hyper)
    out = np.asarray(cm.model.predict(x, batch_size=1024, verbose=0, callbacks=[cancel_callback(plpy)]), np.float64)
    if task == "classification":
        result["prediction"] = np.argmax(out, axis=1).astype(np.float64).tolist()
        if p.proba:
            result["probabilities"] = out.reshape(-1).tolist()
    else:
        scale, offset = float(stats.target_std or 1.0), float(stats.target_mean or 0.0)
        result["prediction"] = (out[:, 0] * scale + offset).tolist()
    if p.action == "evaluate":
        if any(v is None for v in entry["y"]):
            raise DataProblem("a label is NULL or not one of the model's classes")
        y = decode_labels(np.frombuffer(b"".join(entry["y"]), dtype=">f4"), stats, task)
        if task == "classification":
            probs = np.clip(out / out.sum(axis=1, keepdims=True), EPSILON, 1 - EPSILON)
            loss = float(np.mean(-np.log(probs[np.arange(n), y])))
            metric = float(np.mean(np.argmax(out, axis=1) == y))
        else:
            error = out[:, 0] - y
            loss, metric = float(np.mean(error**2)), float(np.mean(np.abs(error)))
        result["loss"], result["metric"] = in_target_units(loss, metric, task, stats)
        if rules.compiled_metric(task, p.metric) in rules.RANKING_KINDS:  # not a mean over rows: its counts
            result["metric_state"] = ranking_metric_state(task, p.metric, stats, y, out)
    return result


def ranking_metric_state(task: str, metric: str, stats: rules.PackStats, y: np.ndarray, out: np.ndarray) -> list[float]:
    """The state of the run's ranking metric (AUC: true/false positives and negatives at each
    threshold; precision, recall, F1: per-class counts) after the rows (y class indices [n], out
    probabilities [n, classes]), flat. Counts add up across segments, so the client sums them and
    computes the metric over every row (see :func:`ranking_metric_result`)."""
    m = make_metric(task, metric, int(stats.n_outputs))
    m.update_state(y, out.astype(np.float32))
    return np.concatenate([np.asarray(v.numpy(), np.float64).reshape(-1) for v in m.variables]).tolist()


def ranking_metric_result(task: str, metric: str, stats: rules.PackStats, states: list[list[float]]) -> float:
    """The ranking metric over all rows from the segments' states (ranking_metric_state), summed."""
    n = int(stats.n_outputs)
    m = make_metric(task, metric, n)
    # Keras builds some metrics' counts at their first update (FBetaScore's): one of no rows builds
    # them, as the segments' metrics were, in the same order
    m.update_state(np.zeros((0,), np.int32), np.zeros((0, n), np.float32))
    total = np.sum(np.asarray(states, np.float64), axis=0)
    if total.size != sum(int(np.prod(v.shape)) for v in m.variables):
        raise ValueError(f"{metric}: the segments' counts do not fit the metric's")
    at = 0
    for v in m.variables:
        size = int(np.prod(v.shape))
        v.assign(total[at:at + size].reshape(v.shape).astype(v.dtype))
        at += size
    return float(m.result())

"""The embedded server's ``sitecustomize``: Keras imported once, in the postmaster.

The embedded PostgreSQL preloads PL/Python (``shared_preload_libraries = 'plpython3'``), so its
postmaster starts Python at server start, and Python imports ``sitecustomize`` from the server's
``PYTHONPATH`` (:class:`ctq.embedded.EmbeddedCluster` puts this file first on it). Importing Keras
here, once, lets every backend the postmaster forks start with Keras, jax and numpy already
imported: a segment's warm-up no longer begins with a Keras import of its own (0.8-0.9 s a backend
and run, measured; bench/model_size.py). Nothing else runs: jax starts its XLA client and threads
lazily, at a backend's first computation, so the postmaster stays single-threaded and forks as
PostgreSQL requires.

This file is copied, not imported from the client: it imports nothing of ctq's. It does what
``ctq.indb.import_keras`` does before its import (the backend, no matplotlib) and never fails the
server's start: a Keras that cannot be imported here is imported, or reported, by the first
backend that needs it, as without this file.
"""

import os
import sys

if os.environ.get("CTQ_SERVER") == "1":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    _hidden = "matplotlib" not in sys.modules  # Keras imports pyplot when it can (see import_keras)
    if _hidden:
        sys.modules["matplotlib"] = None
    try:
        import keras  # noqa: F401
    except Exception:  # noqa: BLE001 - a backend imports it again and says why
        pass
    finally:
        if _hidden and sys.modules.get("matplotlib", 0) is None:
            del sys.modules["matplotlib"]

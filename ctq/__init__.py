"""ctq: Keras model selection by Model Hopper Parallelism over concurrent targeted queries.

Training happens inside the database server, in PL/Python (:mod:`ctq.indb`, through the functions
that ``ctq install`` creates). The client imports Keras only to read ``keras_json`` models from
their shapes (:mod:`ctq.model_check`) and to export a trained model (:mod:`ctq.export`).
"""

__version__ = "0.1.0"

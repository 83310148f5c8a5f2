"""ctq: Keras model selection by Model Hopper Parallelism over concurrent targeted queries.

The client (this package, minus :mod:`ctq.indb`) never imports Keras: training happens inside the
database server, in PL/Python, through the functions that ``ctq install`` creates.
"""

__version__ = "0.1.0"

-- Nothing to preload on Citus: the worker backend that trains segment {{segment}} is opened by the
-- coordinator at the segment's first query, and imports Keras in its warm-up.
SELECT true

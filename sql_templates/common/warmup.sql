-- Warm-up of one segment's backend before its first hop (see indb.step_final): decode and cache
-- the segment's data, build every model of the run and compile its steps. $1 the parameters
-- (action "warmup"). Returns the estimated seconds of a hop of each model (JSON array, in the
-- order of the parameters' models; NULL when the segment streams its buffers).
SELECT (s.r).estimates FROM ({{train_query}}) s;

-- Warm-up of one segment's backend before its first hop (see indb.step_final): decode and cache
-- the segment's data and build every model of the run. $1 the parameters (action "warmup").
SELECT (s.r).rows FROM ({{train_query}}) s;

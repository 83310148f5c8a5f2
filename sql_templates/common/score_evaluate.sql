-- ctq evaluate, on one segment's connection: its rows, mean loss and metric (the client weighs
-- the segments by their rows).
SELECT (s.r).rows, (s.r).loss, (s.r).metric, (s.r).executed_on, (s.r).metric_state FROM ({{score_query}}) s

-- Measured hops of a run, for `ctq simulate --replay` and the cost-aware MOP rule on a resume:
-- each hop's seconds (its training statement's start to its state stored) and the gap before it on
-- its segment (the previous hop's end there to this one's start: the coordinator's turn-around;
-- NULL for a segment's first hop).
SELECT model_id, segment, epoch, extract(epoch FROM finished_at - started_at)::float8 AS seconds,
       extract(epoch FROM started_at - lag(finished_at) OVER (PARTITION BY segment ORDER BY started_at))::float8 AS gap
FROM ctq.hops WHERE run_id = $1;

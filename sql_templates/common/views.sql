-- Views for analysts (README, "SQL views"). A view reads its tables with its owner's rights (the
-- installer's: row-level security does not apply to it), so each one filters on its reader as the
-- policies do (row_security.sql). security_barrier (PostgreSQL 9.2+, so Greenplum 6 too, where
-- security_invoker does not exist) makes that filter run before any function of the reader's
-- query: a reader's own (leaky) function in a WHERE clause sees only rows the filter let through.
ALTER VIEW ctq.leaderboard SET (security_barrier = true);

-- One row per model and epoch: the training loss and metric (weighted over the epoch's hops) and
-- the validation loss and metric evaluated after it. epoch counts from 1 (ctq.epochs from 0).
CREATE OR REPLACE VIEW ctq.learning_curves WITH (security_barrier = true) AS
SELECT e.run_id, e.model_id, m.name AS model, m.status, e.epoch + 1 AS epoch, e.train_loss, e.train_metric,
       e.val_loss, e.val_metric, r.metric, e.finished_at
FROM {{catalog}}.epochs e
JOIN {{catalog}}.models m ON m.run_id = e.run_id AND m.model_id = e.model_id
JOIN {{catalog}}.runs r ON r.run_id = e.run_id
WHERE ctq.can_read_run(r.run_by, r.shared_with);

-- One row per segment of a run: its hops, the seconds it spent in them (measured in the server,
-- from the start of each hop's training statement to its state being stored: busy_seconds), the
-- seconds Keras trained and evaluated in them (compute_seconds), and both over the span of the
-- run's hop schedule (its first hop's start to its last hop's end; a resumed run's span includes
-- the pause): utilization (busy) and compute_share (compute; the rest of busy is reading data and
-- moving the model's state).
CREATE OR REPLACE VIEW ctq.segment_utilization WITH (security_barrier = true) AS
SELECT h.run_id, h.segment, count(*) AS hops,
       sum(extract(epoch FROM h.finished_at - h.started_at))::float8 AS busy_seconds,
       sum(h.compute_seconds)::float8 AS compute_seconds,
       s.span_seconds,
       (sum(extract(epoch FROM h.finished_at - h.started_at)) / nullif(s.span_seconds, 0))::float8 AS utilization,
       (sum(h.compute_seconds) / nullif(s.span_seconds, 0))::float8 AS compute_share
FROM {{catalog}}.hops h
JOIN {{catalog}}.runs r ON r.run_id = h.run_id
JOIN (SELECT run_id, extract(epoch FROM max(finished_at) - min(started_at))::float8 AS span_seconds
      FROM {{catalog}}.hops GROUP BY run_id) s ON s.run_id = h.run_id
WHERE ctq.can_read_run(r.run_by, r.shared_with)
GROUP BY h.run_id, h.segment, s.span_seconds;

-- One search decision (ctq.search.Decision). $1 run, $2 model, $3 rung, $4 seq, $5 epoch, $6 metric,
-- (on Greenplum the body of ctq.record_decision, greenplum/row_security.sql, once it has checked the caller)
-- $7 value, $8 'promote' | 'stop', $9 reason. A stop also closes the model (model_status.sql).
INSERT INTO {{catalog}}.decisions (run_id, model_id, rung, seq, epoch, metric, value, decision, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

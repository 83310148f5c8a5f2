-- One search decision, parameters as in common/record_decision.sql (ctq.record_decision).
SELECT ctq.record_decision($1, $2, $3, $4, $5, $6, $7, $8, $9);

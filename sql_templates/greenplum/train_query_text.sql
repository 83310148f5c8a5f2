-- The targeted training query of segment 0 on pack $1 (ctq.gp_train_query), for `ctq doctor` to
-- show its plan; its only parameter, $1, is the parameters' JSON.
SELECT ctq.gp_train_query($1, 0, ctq.segment_key($1, 0), 'cached', false);

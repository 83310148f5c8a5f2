-- Greenplum, step 2 of a hop: record it in one statement (entirely or not at all). Greenplum
-- allows one modifying CTE per query and none feeding an INSERT, so this is a function call
-- (ctq.record_own_hop: the caller's run only, row_security.sql).
-- $1 run, $2 model, $3 epoch, $4 last hop of the epoch, $5.. the training query's result.
SELECT ctq.record_own_hop($1, $2, $3::int, {{segment}}, $4::boolean,
                          ROW($5::bytea, $6::float8, $7::float8, $8::int, $9::float8, $10::float8, $11::float8,
                              $12::timestamptz, $13::timestamptz, $14::int, NULL::text)::ctq.hop_result);

-- Whether ctq.server_code holds exactly the modules $1 (names) at sha $2: what every PL/Python
-- function loads (bootstrap.py refuses anything else and asks for `ctq install`).
SELECT count(*) = cardinality($1::text[]) AND bool_and(sha = $2) AND bool_and(name = ANY($1::text[]))
FROM ctq.server_code;

-- $1 run_id, $2 roles, $3 revoke: add the roles to (or remove them from) the run's readers, each once,
-- in name order. Row-level security (row_security.sql) lets only the owner or an administrator update.
UPDATE ctq.runs r
SET shared_with = ARRAY(SELECT DISTINCT g FROM unnest(CASE WHEN $3 THEN r.shared_with
                                                           ELSE r.shared_with || $2::text[] END) g
                        WHERE NOT ($3 AND g = ANY ($2::text[])) ORDER BY g)
WHERE r.run_id = $1
RETURNING r.shared_with;

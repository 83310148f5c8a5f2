-- $1 run_id, $2 roles, $3 revoke (ctq.share_run: only the owner or an administrator); the run's roles now.
SELECT ctq.share_run($1, $2::text[], $3);

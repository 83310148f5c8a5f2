-- Whether this session's role is a member of group role $1 (ctq_user: may use ctq).
SELECT pg_has_role(current_user, $1, 'MEMBER')

-- Whether this session's role may read relation $1 (an oid).
SELECT has_table_privilege($1::oid, 'SELECT')

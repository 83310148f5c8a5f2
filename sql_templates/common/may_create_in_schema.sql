-- Whether this session's role may create tables in schema $1.
SELECT has_schema_privilege($1, 'CREATE')

-- Whether this session's role may delete runs (ctq_admin and the installer).
SELECT has_table_privilege('ctq.runs', 'DELETE')

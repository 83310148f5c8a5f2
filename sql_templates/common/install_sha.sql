-- The fingerprint of the installed catalog and server code (sql.install_fingerprint).
SELECT value #>> '{}' FROM ctq.meta WHERE key = 'install_sha'

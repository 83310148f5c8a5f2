-- Before storing this client's server modules (under the install lock; Greenplum 6 has no ON CONFLICT).
DELETE FROM ctq.server_code

-- One table's rows of the runs being deleted ({{table}}: one of run_tables.sql, quoted; the runs
-- table last: Greenplum does not enforce the foreign keys, so nothing cascades there).
DELETE FROM ctq.{{table}} WHERE run_id = ANY($1::bigint[]);

-- One table's rows of the runs being deleted (hops, epochs, models, then runs: Greenplum does not
-- enforce the foreign keys, so nothing cascades there).
DELETE FROM ctq.{{table}} WHERE run_id = ANY($1::bigint[]);

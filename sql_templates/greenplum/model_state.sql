-- A model's stored state: on Greenplum one value in ctq.models.state, given as one part of the
-- kind indb.LEGACY_PART (a whole flat state). $1 run_id, $2 model_id
SELECT -2 AS array_index, 0::int8 AS byte_offset, state AS data FROM ctq.models
WHERE run_id = $1 AND model_id = $2 AND state IS NOT NULL;

-- The targeted query of virtual segment {{segment}}: its partition plus the validation partition,
-- and the parts of the model's checkpoint (state_parts_rows.sql; none for the warm-up, nor where its
-- current state is its working state: the final function reads that file, indb.load_working_state).
-- The rows filter skips the buffer rows when this backend has them cached already (the marker row
-- stays); when streaming, the aggregate ORDER BY sends the state's parts first (their segment is
-- NULL), then the segment's own buffers before the validation ones.
SELECT ctq.train_step(b.segment, b.bucket, b.rows, b.x, b.y, b.k, b.part, b.part_offset, b.part_data,
                      {{params}}{{order}}) AS r
FROM (SELECT b.segment, b.bucket, b.rows, b.x, b.y, b.k, NULL::int AS part, NULL::int8 AS part_offset,
             NULL::bytea AS part_data
      FROM {{pack_table}} b
      WHERE b.segment IN ({{segment}}, -1) AND {{rows_filter}}
      {{state_parts}}) b

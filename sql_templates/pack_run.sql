-- $1 source, $2 features, $3 label (all quoted identifiers), $4 task, $5 array_feature,
-- $6 validation_fraction, $7 segments, $8 buffer_rows, $9 seed, $10 target table
SELECT ctq.pack($1, $2::text[], $3, $4, $5, $6, $7, $8, $9, $10)::text;

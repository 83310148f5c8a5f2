-- Packing worker {{worker}} of {{workers}}: its share of the buffers of one pack. The source's rows
-- (pack_rows.sql: each with its split, segment and bucket) grouped by bucket: a bucket becomes one
-- buffer row. Rows are ordered by their key when decoded, so scan order does not matter.
SELECT segment, bucket, count(*)::int, string_agg(xb, ''::bytea), string_agg(yb, ''::bytea),
       string_agg(int8send(key), ''::bytea)
FROM ({{rows}}) s
WHERE ((segment + 1) * 1048576 + bucket) % {{workers}} = {{worker}}
GROUP BY segment, bucket

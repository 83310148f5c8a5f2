-- Packing worker {{worker}} of {{workers}}: its share of the buffers of one pack. Each row's seeded key
-- picks its split (validation: segment -1, or training), its segment and its bucket; a bucket
-- becomes one buffer row. Rows are ordered by their key when decoded, so scan order does not matter.
SELECT segment, bucket, count(*)::int, string_agg(xb, ''::bytea), string_agg(yb, ''::bytea),
       string_agg(int8send(key), ''::bytea)
FROM (
    SELECT CASE WHEN abs(key % {{modulus}}) < {{cut}} THEN -1
                ELSE ((key >> 24) & 2147483647) % {{segments}} END AS segment,
           CASE WHEN abs(key % {{modulus}}) < {{cut}} THEN ((key >> 44) & 1048575) % {{validation_buckets}}
                ELSE ((key >> 44) & 1048575) % {{buckets}} END AS bucket,
           key, xb, yb
    FROM (SELECT {{key}} AS key, {{x_bytes}} AS xb, {{y_bytes}} AS yb FROM {{source}} t) r
) s
WHERE ((segment + 1) * 1048576 + bucket) % {{workers}} = {{worker}}
GROUP BY segment, bucket

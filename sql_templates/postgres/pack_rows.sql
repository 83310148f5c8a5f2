-- The source's rows as packing sees them: each row's seeded key picks its split (validation:
-- segment -1, or training), its segment and its bucket (pack_select.sql groups them into buffers).
SELECT CASE WHEN abs(key % {{modulus}}) < {{cut}} THEN -1
            ELSE ((key >> 24) & 2147483647) % {{segments}} END AS segment,
       CASE WHEN abs(key % {{modulus}}) < {{cut}} THEN ((key >> 44) & 1048575) % {{validation_buckets}}
            ELSE ((key >> 44) & 1048575) % {{buckets}} END AS bucket,
       key, xb, yb
FROM (SELECT {{key}} AS key, {{x_bytes}} AS xb, {{y_bytes}} AS yb FROM {{source}} t) r

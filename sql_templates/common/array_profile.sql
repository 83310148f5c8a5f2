-- An array feature column: widths, NULL elements, range and per-element training statistics.
SELECT min(cardinality(a.x)) AS min_width, max(cardinality(a.x)) AS max_width, max(array_ndims(a.x)) AS max_dims,
       count(*) FILTER (WHERE a.has_null) AS null_elements,
       (SELECT min(v) FROM (SELECT unnest(x) AS v FROM (SELECT {{column}}::float8[] AS x FROM {{source}}) q) u) AS lo,
       (SELECT max(v) FROM (SELECT unnest(x) AS v FROM (SELECT {{column}}::float8[] AS x FROM {{source}}) q) u) AS hi,
       (SELECT array_agg(m ORDER BY i) FROM (
            SELECT i, avg(v) AS m FROM (SELECT {{column}}::float8[] AS x, abs(({{key}}) % {{modulus}}) >= {{cut}} AS tr
                                        FROM {{source}} s) q, unnest(q.x) WITH ORDINALITY u(v, i)
            WHERE q.tr GROUP BY i) e) AS means,
       (SELECT array_agg(w ORDER BY i) FROM (
            SELECT i, var_pop(v) AS w FROM (SELECT {{column}}::float8[] AS x, abs(({{key}}) % {{modulus}}) >= {{cut}} AS tr
                                            FROM {{source}} s) q, unnest(q.x) WITH ORDINALITY u(v, i)
            WHERE q.tr GROUP BY i) e) AS variances
FROM (SELECT {{column}}::float8[] AS x, EXISTS (SELECT 1 FROM unnest({{column}}) v WHERE v IS NULL) AS has_null
      FROM {{source}}) a;

-- One categorical feature column's distinct non-NULL values (its vocabulary) as text, numbered in
-- the column's own order, at most {{limit}}; distinct_values counts them all (for the error past
-- the cap). The branches of every categorical column are one statement, joined by UNION ALL
-- (packing.py _vocabularies), which the server may run in parallel.
(SELECT {{feature}} AS feature, row_number() OVER (ORDER BY v) AS position, v::text AS value,
        count(*) OVER () AS distinct_values
 FROM (SELECT {{column}} AS v FROM {{source}} WHERE {{column}} IS NOT NULL GROUP BY 1) g
 ORDER BY v LIMIT {{limit}})

-- A categorical feature column's distinct non-NULL values (its vocabulary), in the column's own
-- order, as text, at most {{limit}}; distinct_values counts them all (for the error past the cap).
SELECT v::text AS value, count(*) OVER () AS distinct_values
FROM (SELECT {{column}} AS v FROM {{source}} WHERE {{column}} IS NOT NULL GROUP BY 1) g
ORDER BY v LIMIT {{limit}};

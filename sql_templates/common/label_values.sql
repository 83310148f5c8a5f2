-- The label's distinct values (classification), at most {{limit}}, in order, with their row counts.
SELECT {{label}} AS value, count(*) AS n FROM {{source}} GROUP BY 1 ORDER BY 1 LIMIT {{limit}};

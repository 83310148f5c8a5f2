-- The label's distinct values (classification): at most {{limit}}, in order.
SELECT DISTINCT {{label}} AS value FROM {{source}} ORDER BY 1 LIMIT {{limit}};

-- Which of a source's numeric columns hold a value too large to profile (packing._too_large):
-- one flag per column, in order.
SELECT ARRAY[{{checks}}]::boolean[] FROM {{source}} t;

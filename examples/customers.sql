-- 5,000 customers: churn depends on the region and the plan, not on age; about 20% churn.
DROP TABLE IF EXISTS public.customers;
CREATE TABLE public.customers AS
SELECT (18 + random() * 60)::int AS age,
       (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4] AS region,
       g % 12 AS plan_code,
       (g % 4 = 1 AND g % 12 IN (1, 5)) OR random() < 0.04 AS churned
FROM generate_series(1, 5000) g;

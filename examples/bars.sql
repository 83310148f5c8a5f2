-- 2,000 noisy 6x6 images: a vertical bar (label 0) or a horizontal bar (label 1) at a random place.
DROP TABLE IF EXISTS public.bars;
CREATE TABLE public.bars AS
SELECT ARRAY(SELECT CASE WHEN (label = 0 AND p % 6 = at) OR (label = 1 AND p / 6 = at) THEN 1 ELSE 0 END
                    + random() * 0.5
             FROM generate_series(0, 35) p)::real[] AS pixels, label
FROM (SELECT g % 2 AS label, (random() * 5.99)::int AS at FROM generate_series(1, 2000) g) s;

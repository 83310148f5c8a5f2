-- ctq predict, on one segment's connection: that segment's targeted scoring query, its predictions
-- next to their ids (in the order the aggregates read the rows) into the staging table of --out.
-- {{prediction}} maps a class index (u.p) to its class value; {{probabilities}} slices row u.i's
-- probabilities out of the flat array.
INSERT INTO {{dest}} (id, prediction{{proba_column}})
SELECT u.id, {{prediction}}{{probabilities}}
FROM ({{score_query}}) s, unnest(s.ids, (s.r).prediction) WITH ORDINALITY AS u(id, p, i)

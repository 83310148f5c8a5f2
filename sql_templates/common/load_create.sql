-- `ctq load`: a table for a CSV file; {{columns}} are quoted identifiers with their types,
-- {{distribution}} the engine's clause (distribution/by_column.sql or random.sql; empty here).
CREATE TABLE {{table}} ({{columns}}) {{distribution}};

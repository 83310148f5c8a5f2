-- `ctq load`: a table for a CSV file; {{columns}} are quoted identifiers with their types.
CREATE TABLE {{table}} ({{columns}});

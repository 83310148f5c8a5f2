-- Drop table (a quoted, schema-qualified name) if it is there.
DROP TABLE IF EXISTS {{table}}

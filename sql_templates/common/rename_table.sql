-- table (quoted, schema-qualified) takes the name new_name (quoted) in its schema.
ALTER TABLE {{table}} RENAME TO {{new_name}}

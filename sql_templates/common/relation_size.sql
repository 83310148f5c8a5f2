-- The bytes a table takes, its TOAST and indexes included (an expression, spliced into packs.sql).
pg_total_relation_size({{oid}})

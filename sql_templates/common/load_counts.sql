-- `ctq load`: the rows of a table loaded straight by COPY, then {{counts}}: count(column) for each
-- column, in the file's order (its NULLs are the rows less these).
SELECT count(*), {{counts}} FROM {{table}};

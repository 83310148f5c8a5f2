-- schema $1 and name $2 as PostgreSQL shows them (quoted only where needed).
SELECT quote_ident($1) || '.' || quote_ident($2)

-- The oid of the relation named $1 (as text), or NULL.
SELECT to_regclass($1)::oid

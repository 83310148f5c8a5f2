-- Columns of relation $1 (an oid) with their type category: N a number ctq reads (smallint,
-- integer, bigint, real, double precision, numeric, or a domain over one), A array (with its
-- element's category, the same way), B boolean, S string... (pg_type.typcategory). X: a type of
-- PostgreSQL's numeric category that is none of those (money, oid, the reg* types): it has no cast
-- to float8, so it cannot be a feature or a label as it is.
WITH c AS (
    SELECT a.attnum, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, t.typcategory,
           coalesce(nullif(t.typbasetype, 0), t.oid) AS base, et.typcategory AS element_category,
           coalesce(nullif(et.typbasetype, 0), et.oid) AS element_base
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
    WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
)
SELECT name, type, base::regtype::text AS base_type,
       CASE WHEN typcategory = 'N' AND base::regtype <> ALL (ARRAY['int2', 'int4', 'int8', 'float4', 'float8',
                                                                   'numeric']::regtype[]) THEN 'X'
            ELSE typcategory::text END AS category,
       CASE WHEN element_category = 'N' AND element_base::regtype <> ALL (ARRAY['int2', 'int4', 'int8', 'float4',
                                                                                'float8', 'numeric']::regtype[])
            THEN 'X' ELSE coalesce(element_category::text, '') END AS element_category
FROM c
ORDER BY attnum;

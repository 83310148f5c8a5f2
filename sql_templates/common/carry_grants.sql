-- What a table that replaces relation $1 (ctq predict --replace, ctq load --replace) takes over from it, as statements
-- on {{table}}: the privileges its owner granted (to roles, or PUBLIC) and its comment. Its indexes,
-- triggers and the like are not carried over (docs/predict-export.md).
SELECT format('GRANT %s ON {{table}} TO %s%s', a.privilege_type,
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE c.oid = $1 AND a.grantee <> c.relowner
UNION ALL
SELECT format('COMMENT ON TABLE {{table}} IS %L', d.description)
FROM pg_description d WHERE d.objoid = $1 AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0

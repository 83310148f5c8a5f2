-- What would make DROP TABLE (without CASCADE) of relation $1 (its oid) fail: the objects that
-- depend on it in the normal way (a view or materialized view reading it, a foreign key
-- referencing it, a table inheriting from it), as the server names them in that error. A view is
-- named, not its _RETURN rule.
SELECT DISTINCT CASE
           WHEN d.classid = 'pg_rewrite'::regclass
               THEN (SELECT CASE c.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END || c.oid::regclass::text
                     FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid)
           ELSE pg_describe_object(d.classid, d.objid, d.objsubid)
       END AS object
FROM pg_depend d
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.deptype = 'n'
  AND NOT (d.classid = 'pg_rewrite'::regclass AND (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = d.objid) = $1)
  AND NOT (d.classid = 'pg_class'::regclass AND d.objid = $1)
ORDER BY 1;

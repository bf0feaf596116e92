-- The tables and views each view of the shadan_export schema reads: the relations its
-- rewrite rule depends on (itself excepted). An export view must read its mapped table
-- and nothing else, whatever that table is called now.
SELECT vn.nspname::text, v.relname::text, rn.nspname::text, r.relname::text
FROM pg_catalog.pg_class v
JOIN pg_catalog.pg_namespace vn ON vn.oid OPERATOR(pg_catalog.=) v.relnamespace
JOIN pg_catalog.pg_rewrite w ON w.ev_class OPERATOR(pg_catalog.=) v.oid
JOIN pg_catalog.pg_depend d ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    AND d.objid OPERATOR(pg_catalog.=) w.oid
    AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
    AND d.refobjid OPERATOR(pg_catalog.<>) v.oid
JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) d.refobjid
JOIN pg_catalog.pg_namespace rn ON rn.oid OPERATOR(pg_catalog.=) r.relnamespace
WHERE v.relkind OPERATOR(pg_catalog.=) 'v' AND vn.nspname OPERATOR(pg_catalog.=) 'shadan_export'
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4

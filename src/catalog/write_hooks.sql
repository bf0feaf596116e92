-- Triggers and rules that can change what a write to a user table does (enabled,
-- user-defined triggers; rules on anything but SELECT), attributed to the table and to
-- every partitioned table above it (pg_partition_ancestors lists none for a plain table): a trigger on one partition changes what a write to
-- the parent does. sync re-reads a batch it wrote to such a table before committing it.
SELECT n.nspname::text, c.relname::text, 'trigger ' OPERATOR(pg_catalog.||) t.tgname::text
FROM pg_catalog.pg_trigger t
CROSS JOIN LATERAL (SELECT t.tgrelid UNION SELECT p.relid FROM pg_catalog.pg_partition_ancestors(t.tgrelid) AS p) AS a(relid)
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.relid
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE NOT t.tgisinternal AND t.tgenabled OPERATOR(pg_catalog.<>) 'D'
UNION
SELECT n.nspname::text, c.relname::text, 'rule ' OPERATOR(pg_catalog.||) r.rulename::text
FROM pg_catalog.pg_rewrite r
CROSS JOIN LATERAL (SELECT r.ev_class UNION SELECT p.relid FROM pg_catalog.pg_partition_ancestors(r.ev_class) AS p) AS a(relid)
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.relid
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE r.ev_type OPERATOR(pg_catalog.<>) '1'
ORDER BY 1, 2, 3

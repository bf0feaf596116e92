-- Triggers and rules that can change what a write to a user table does (enabled,
-- user-defined triggers; rules on anything but SELECT): sync re-reads a batch it wrote to
-- such a table before committing it.
SELECT n.nspname::text, c.relname::text, 'trigger ' OPERATOR(pg_catalog.||) t.tgname::text
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE NOT t.tgisinternal AND t.tgenabled OPERATOR(pg_catalog.<>) 'D'
UNION ALL
SELECT n.nspname::text, c.relname::text, 'rule ' OPERATOR(pg_catalog.||) r.rulename::text
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.ev_class
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE r.ev_type OPERATOR(pg_catalog.<>) '1'
ORDER BY 1, 2, 3

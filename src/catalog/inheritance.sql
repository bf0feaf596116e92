-- Every inheritance descendant (not partitions) of every user table, children of
-- children included: a query on the parent reads their rows too.
WITH RECURSIVE tree (parent, child) AS (
    SELECT h.inhparent, h.inhrelid
    FROM pg_catalog.pg_inherits h
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) h.inhrelid
    WHERE NOT c.relispartition
    UNION
    SELECT tree.parent, h.inhrelid
    FROM tree
    JOIN pg_catalog.pg_inherits h ON h.inhparent OPERATOR(pg_catalog.=) tree.child
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) h.inhrelid
    WHERE NOT c.relispartition
)
SELECT pn.nspname::text, p.relname::text, cn.nspname::text, c.relname::text
FROM tree
JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) tree.parent
JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.relnamespace
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.child
JOIN pg_catalog.pg_namespace cn ON cn.oid OPERATOR(pg_catalog.=) c.relnamespace
ORDER BY 1, 2, 3, 4

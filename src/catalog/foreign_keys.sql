-- Foreign keys between user tables: the referencing (child) table, the referenced
-- (parent) table, the constraint's name, its definition, its ON DELETE / ON UPDATE
-- actions (`a` no action, `r` restrict, `c` cascade, `n` set null, `d` set default), and
-- the referenced and referencing columns, in the constraint's order, and the referenced
-- table's partition ancestors, itself included when it is a partition (an FK may reference
-- one partition of a partitioned table; a plain table has none), as schemas and names in
-- the same order.
-- Clones for partitions are left out.
SELECT cn.nspname::text, c.relname::text, pn.nspname::text, p.relname::text,
       k.conname::text, pg_catalog.pg_get_constraintdef(k.oid),
       k.confdeltype::text, k.confupdtype::text,
       ARRAY(SELECT a.attname::text
             FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY x(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) k.confrelid
                  AND a.attnum OPERATOR(pg_catalog.=) x.attnum
             ORDER BY x.ord) AS parent_columns,
       ARRAY(SELECT a.attname::text
             FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY x(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) k.conrelid
                  AND a.attnum OPERATOR(pg_catalog.=) x.attnum
             ORDER BY x.ord) AS columns,
       ARRAY(SELECT an.nspname::text
             FROM pg_catalog.pg_partition_ancestors(k.confrelid) WITH ORDINALITY pa(relid, ord)
             JOIN pg_catalog.pg_class ac ON ac.oid OPERATOR(pg_catalog.=) pa.relid
             JOIN pg_catalog.pg_namespace an ON an.oid OPERATOR(pg_catalog.=) ac.relnamespace
             ORDER BY pa.ord) AS ancestor_schemas,
       ARRAY(SELECT ac.relname::text
             FROM pg_catalog.pg_partition_ancestors(k.confrelid) WITH ORDINALITY pa(relid, ord)
             JOIN pg_catalog.pg_class ac ON ac.oid OPERATOR(pg_catalog.=) pa.relid
             ORDER BY pa.ord) AS ancestor_names
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) k.conrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid OPERATOR(pg_catalog.=) c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) k.confrelid
JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.relnamespace
WHERE k.contype OPERATOR(pg_catalog.=) 'f' AND k.conparentid OPERATOR(pg_catalog.=) 0
ORDER BY 1, 2, 5

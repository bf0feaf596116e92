-- The unique indexes and exclusion constraints of user tables, each as its key column
-- names in index order (NULL for an expression column; INCLUDE columns are not key
-- columns), with whether it is the primary key, checked immediately (a DEFERRABLE
-- constraint is not: it cannot serve ON CONFLICT), plain (no expression, no predicate),
-- exact (every column compared under a deterministic collation: a case-insensitive
-- index would make ON CONFLICT merge two source rows) and an exclusion constraint. A
-- mapping key must be a plain, immediate, exact unique one; the others matter to sync,
-- which must be able to keep them; an index of one partition alone counts, for sync, on
-- the partitioned table as a partial one. Only indexes that are valid and ready count (a failed
-- CREATE UNIQUE INDEX CONCURRENTLY leaves one that is neither). Every operator and
-- function is qualified.
SELECT n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       i.indisprimary  AS is_primary,
       ARRAY(SELECT a.attname::text
             FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, ord)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
                  AND a.attnum OPERATOR(pg_catalog.=) k.attnum
             WHERE k.ord OPERATOR(pg_catalog.<=) i.indnkeyatts
             ORDER BY k.ord) AS columns,
       i.indimmediate  AS immediate,
       i.indpred IS NULL AND i.indexprs IS NULL AS plain,
       NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(i.indcollation::pg_catalog.oid[]) ic(coll)
                   JOIN pg_catalog.pg_collation co ON co.oid OPERATOR(pg_catalog.=) ic.coll
                   WHERE NOT co.collisdeterministic) AS exact,
       i.indisexclusion AS exclusion,
       -- For an index of one partition alone (not attached to an index of its parent):
       -- the partitioned table at the root, which writes reach it through.
       (SELECT rn.nspname::text FROM pg_catalog.pg_class rc
        JOIN pg_catalog.pg_namespace rn ON rn.oid OPERATOR(pg_catalog.=) rc.relnamespace
        WHERE rc.oid OPERATOR(pg_catalog.=) pg_catalog.pg_partition_root(c.oid)
          AND rc.oid OPERATOR(pg_catalog.<>) c.oid
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits ih
                          WHERE ih.inhrelid OPERATOR(pg_catalog.=) i.indexrelid)) AS root_schema,
       (SELECT rc.relname::text FROM pg_catalog.pg_class rc
        WHERE rc.oid OPERATOR(pg_catalog.=) pg_catalog.pg_partition_root(c.oid)
          AND rc.oid OPERATOR(pg_catalog.<>) c.oid) AS root_name
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE (i.indisunique OR i.indisexclusion)
  AND i.indisvalid
  AND i.indisready
  AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema', 'shadan']::name[])
ORDER BY n.nspname, c.relname, i.indisprimary DESC, i.indexrelid

-- The unique indexes of user tables, each as its column names in index order (NULL for
-- an expression column), with whether it is the primary key, checked immediately (a
-- DEFERRABLE constraint is not: it cannot serve ON CONFLICT) and plain (no expression,
-- no predicate). A mapping key must be a plain, immediate one; the others matter to
-- sync, which must be able to keep them. Only indexes that enforce uniqueness now count:
-- valid and ready (a failed CREATE UNIQUE INDEX CONCURRENTLY leaves one that is neither).
-- Every operator and function is qualified.
SELECT n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       i.indisprimary  AS is_primary,
       ARRAY(SELECT a.attname::text
             FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, ord)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
                  AND a.attnum OPERATOR(pg_catalog.=) k.attnum
             ORDER BY k.ord) AS columns,
       i.indimmediate  AS immediate,
       i.indpred IS NULL AND i.indexprs IS NULL AS plain
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE i.indisunique
  AND i.indisvalid
  AND i.indisready
  AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema', 'shadan']::name[])
ORDER BY n.nspname, c.relname, i.indisprimary DESC, i.indexrelid

-- Primary keys and plain unique indexes (no expression, no predicate) of user tables,
-- each as its column names in index order. A mapping key must be one of these.
SELECT n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       i.indisprimary  AS is_primary,
       array(SELECT a.attname::text
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
             ORDER BY k.ord) AS columns
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique
  AND i.indpred IS NULL
  AND i.indexprs IS NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'shadan')
ORDER BY n.nspname, c.relname, i.indisprimary DESC, i.indexrelid

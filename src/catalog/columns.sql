-- Every column of every user table (and view) the connected role can see, in column order,
-- with the exact type (typmod included), nullability and binary pass-through facts.
-- The tool's own schema `shadan` is not part of any mapping and is left out.
SELECT n.nspname::text                                   AS schema_name,
       c.relname::text                                   AS table_name,
       c.relkind::text                                   AS kind,
       a.attname::text                                   AS column_name,
       format_type(a.atttypid, a.atttypmod)              AS type_name,
       a.atttypid                                        AS type_oid,
       a.attnotnull                                      AS not_null,
       a.attgenerated <> ''                              AS generated,
       t.typtype::text                                   AS type_kind,
       t.typcategory::text                               AS type_category,
       coalesce(et.oid >= 16384, false)                  AS element_user_defined,
       pg_catalog.obj_description(c.oid, 'pg_class')     AS table_comment
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
WHERE c.relkind IN ('r', 'p', 'v')
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'shadan')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
ORDER BY n.nspname, c.relname, a.attnum

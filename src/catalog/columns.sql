-- Every column of every user table (and view) the connected role can see, in column order,
-- with the exact type (typmod included), nullability, binary pass-through facts, and the
-- collation facts that decide how key ranges compare. Runs with search_path pinned to
-- pg_catalog; every function is qualified all the same.
-- The tool's own schema `shadan` is not part of any mapping and is left out.
SELECT n.nspname::text                                           AS schema_name,
       c.relname::text                                           AS table_name,
       c.relkind::text                                           AS kind,
       a.attname::text                                           AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod)           AS type_name,
       a.atttypid                                                AS type_oid,
       a.attnotnull                                              AS not_null,
       a.attgenerated OPERATOR(pg_catalog.<>) ''                 AS generated,
       t.typtype::text                                           AS type_kind,
       t.typcategory::text                                       AS type_category,
       coalesce(et.oid OPERATOR(pg_catalog.>=) 16384, false)     AS element_user_defined,
       pg_catalog.obj_description(c.oid, 'pg_class')             AS table_comment,
       pg_catalog.quote_ident(rn.nspname::text) OPERATOR(pg_catalog.||) '.'
           OPERATOR(pg_catalog.||) pg_catalog.quote_ident(rt.typname::text)
                                                                 AS base_type_name,
       rt.oid                                                    AS representation_oid,
       CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd' THEN root.typmod ELSE a.atttypmod END
                                                                 AS representation_typmod,
       CASE WHEN co.oid IS NOT NULL
            THEN pg_catalog.quote_ident(cn.nspname::text) OPERATOR(pg_catalog.||) '.'
                 OPERATOR(pg_catalog.||) pg_catalog.quote_ident(co.collname::text) END
                                                                 AS collation_sql,
       CASE WHEN co.oid IS NULL THEN NULL
            WHEN co.oid OPERATOR(pg_catalog.=) 100 THEN
                 'default (' OPERATOR(pg_catalog.||)
                 CASE WHEN d.datlocprovider OPERATOR(pg_catalog.=) 'i'
                      THEN 'icu ' OPERATOR(pg_catalog.||)
                           coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'daticulocale',
                                    pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'datlocale', '?')
                      ELSE 'libc ' OPERATOR(pg_catalog.||) d.datcollate::text END
                 OPERATOR(pg_catalog.||) ')'
            ELSE co.collname::text OPERATOR(pg_catalog.||) ' (' OPERATOR(pg_catalog.||)
                 CASE WHEN co.collprovider OPERATOR(pg_catalog.=) 'i'
                      THEN 'icu ' OPERATOR(pg_catalog.||)
                           coalesce(pg_catalog.to_jsonb(co) OPERATOR(pg_catalog.->>) 'colliculocale',
                                    pg_catalog.to_jsonb(co) OPERATOR(pg_catalog.->>) 'colllocale', '?')
                      ELSE 'libc ' OPERATOR(pg_catalog.||) coalesce(co.collcollate::text, '?') END
                 OPERATOR(pg_catalog.||) ')'
       END                                                       AS collation_label,
       coalesce(co.collisdeterministic, true)                    AS collation_deterministic,
       coalesce(CASE WHEN co.oid OPERATOR(pg_catalog.=) 100
                     THEN d.datlocprovider OPERATOR(pg_catalog.=) 'c'
                          AND d.datcollate::text OPERATOR(pg_catalog.=) ANY (ARRAY['C', 'POSIX'])
                     ELSE co.collprovider OPERATOR(pg_catalog.=) 'c'
                          AND co.collcollate::text OPERATOR(pg_catalog.=) ANY (ARRAY['C', 'POSIX']) END,
                false)                                           AS collation_bytewise,
       pg_catalog.pg_get_userbyid(c.relowner)::text              AS owner,
       pg_catalog.pg_get_userbyid(n.nspowner)::text              AS schema_owner,
       a.attidentity OPERATOR(pg_catalog.=) 'a'                  AS identity_always,
       pg_catalog.col_description(c.oid, a.attnum::pg_catalog.int4) AS column_comment,
       -- What decides the collation's order: provider, locale and the library's actual
       -- version. Two columns with the same identity order text alike, which lets key
       -- ranges use each side's own index.
       CASE WHEN co.oid IS NULL OR NOT co.collisdeterministic THEN NULL
            WHEN co.oid OPERATOR(pg_catalog.=) 100 THEN
                 CASE WHEN d.datlocprovider OPERATOR(pg_catalog.=) 'i'
                      THEN 'icu ' OPERATOR(pg_catalog.||)
                           coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'daticulocale',
                                    pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'datlocale', '?')
                      ELSE 'libc ' OPERATOR(pg_catalog.||) d.datcollate::text END
                 OPERATOR(pg_catalog.||) ' version ' OPERATOR(pg_catalog.||)
                 coalesce(pg_catalog.pg_database_collation_actual_version(d.oid), 'none')
            ELSE CASE WHEN co.collprovider OPERATOR(pg_catalog.=) 'i'
                      THEN 'icu ' OPERATOR(pg_catalog.||)
                           coalesce(pg_catalog.to_jsonb(co) OPERATOR(pg_catalog.->>) 'colliculocale',
                                    pg_catalog.to_jsonb(co) OPERATOR(pg_catalog.->>) 'colllocale', '?')
                      ELSE 'libc ' OPERATOR(pg_catalog.||) coalesce(co.collcollate::text, '?') END
                 OPERATOR(pg_catalog.||) ' version ' OPERATOR(pg_catalog.||)
                 coalesce(cv.version, 'none')
       END                                                       AS collation_identity,
       pg_catalog.format_type(rt.oid, CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd' THEN root.typmod
                                           ELSE a.atttypmod END)  AS representation_name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
     AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
-- The type under every domain (a domain over varchar(5) carries the typmod that must not
-- reach a bound value's cast), followed through domains over domains.
CROSS JOIN LATERAL (
    WITH RECURSIVE chain (oid, typtype, typbasetype, typtypmod, depth) AS (
        SELECT t.oid, t.typtype, t.typbasetype, t.typtypmod, 0
        UNION ALL
        SELECT b.oid, b.typtype, b.typbasetype, b.typtypmod, chain.depth OPERATOR(pg_catalog.+) 1
        FROM chain JOIN pg_catalog.pg_type b ON b.oid OPERATOR(pg_catalog.=) chain.typbasetype
        WHERE chain.typtype OPERATOR(pg_catalog.=) 'd' AND chain.depth OPERATOR(pg_catalog.<) 32
    )
    -- The base type, and the typmod the outermost domain that declares one gives it (a
    -- domain over a domain over numeric(12,0) holds numeric(12,0)).
    SELECT chain.oid,
           coalesce((SELECT d.typtypmod FROM chain d WHERE d.typtype OPERATOR(pg_catalog.=) 'd'
                       AND d.typtypmod OPERATOR(pg_catalog.>=) 0 ORDER BY d.depth LIMIT 1), -1) AS typmod
    FROM chain ORDER BY chain.depth DESC LIMIT 1
) root
JOIN pg_catalog.pg_type rt ON rt.oid OPERATOR(pg_catalog.=) root.oid
JOIN pg_catalog.pg_namespace rn ON rn.oid OPERATOR(pg_catalog.=) rt.typnamespace
LEFT JOIN pg_catalog.pg_type et ON et.oid OPERATOR(pg_catalog.=) t.typelem
     AND t.typcategory OPERATOR(pg_catalog.=) 'A'
LEFT JOIN pg_catalog.pg_collation co ON co.oid OPERATOR(pg_catalog.=) a.attcollation
LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid OPERATOR(pg_catalog.=) co.collnamespace
-- Each collation in use asked for its version once, not once per column.
LEFT JOIN (SELECT u.oid, pg_catalog.pg_collation_actual_version(u.oid) AS version
           FROM pg_catalog.pg_collation u
           WHERE u.oid OPERATOR(pg_catalog.<>) 100 AND u.oid OPERATOR(pg_catalog.=) ANY (
               SELECT DISTINCT x.attcollation FROM pg_catalog.pg_attribute x
               WHERE x.attcollation OPERATOR(pg_catalog.<>) 0)) cv
     ON cv.oid OPERATOR(pg_catalog.=) co.oid
CROSS JOIN pg_catalog.pg_database d
WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
  AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm']::"char"[])
  AND NOT c.relispartition
  AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema', 'shadan']::name[])
  AND n.nspname::text NOT LIKE 'pg\_toast%'
  AND n.nspname::text NOT LIKE 'pg\_temp\_%'
ORDER BY n.nspname, c.relname, a.attnum

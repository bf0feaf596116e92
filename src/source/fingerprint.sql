-- The physical definition of a source relation's columns, as rows to hash: what decides
-- the bytes a projection of an unchanged tuple produces. A change here (a column dropped
-- and added again, columns renamed into each other's places, a type altered, an enum
-- label renamed, also under a domain, an array, a composite or a range) can change the
-- projection without writing a tuple, so a sync by `xmin` must not trust an older
-- horizon across it. So can a partition attached with old rows: the partitions of a
-- partitioned table are part of it. $1, $2: the relation's schema and name (looked up in
-- the catalog, which needs no privilege on the schema, unlike a regclass).
WITH RECURSIVE rel AS (
    SELECT c.oid FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2
), cols AS (
    SELECT a.attname, a.attnum, a.atttypid, a.atttypmod, a.attcollation
    FROM pg_catalog.pg_attribute a, rel
    WHERE a.attrelid OPERATOR(pg_catalog.=) rel.oid
      AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
), types(oid) AS (
    SELECT atttypid FROM cols
    UNION
    SELECT x.oid
    FROM types t
    JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) t.oid
    CROSS JOIN LATERAL (
        SELECT ty.typbasetype
        UNION ALL SELECT ty.typelem
        UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r
            WHERE r.rngtypid OPERATOR(pg_catalog.=) ty.oid
        UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r
            WHERE r.rngmultitypid OPERATOR(pg_catalog.=) ty.oid
        UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
            WHERE a.attrelid OPERATOR(pg_catalog.=) ty.typrelid
              AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
    ) x(oid)
    WHERE x.oid OPERATOR(pg_catalog.<>) 0
)
SELECT pg_catalog.concat_ws(' ', 'relation', rel.oid::pg_catalog.oid) FROM rel
UNION ALL
SELECT * FROM (
    WITH RECURSIVE parts(oid) AS (
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i, rel WHERE i.inhparent OPERATOR(pg_catalog.=) rel.oid
        UNION
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN parts p ON i.inhparent OPERATOR(pg_catalog.=) p.oid
    )
    SELECT pg_catalog.concat_ws(' ', 'partition', parts.oid) FROM parts, rel, pg_catalog.pg_class c
    WHERE c.oid OPERATOR(pg_catalog.=) rel.oid AND c.relkind OPERATOR(pg_catalog.=) 'p'
) p
UNION ALL
SELECT * FROM (
    SELECT pg_catalog.concat_ws(' ', 'column', pg_catalog.quote_ident(attname), attnum, atttypid, atttypmod, attcollation)
    FROM cols ORDER BY attnum
) c
UNION ALL
SELECT * FROM (
    SELECT pg_catalog.concat_ws(' ', 'type', ty.oid, ty.xmin, ty.typtype, ty.typbasetype, ty.typelem, ty.typrelid)
    FROM types t JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) t.oid ORDER BY ty.oid
) t
UNION ALL
SELECT * FROM (
    SELECT pg_catalog.concat_ws(' ', 'enum', e.enumtypid, e.enumsortorder, pg_catalog.quote_literal(e.enumlabel))
    FROM pg_catalog.pg_enum e JOIN types t ON t.oid OPERATOR(pg_catalog.=) e.enumtypid
    ORDER BY e.enumtypid, e.enumsortorder
) e

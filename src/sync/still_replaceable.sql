-- Whether the target table ($1 schema, $2 name) still lets sync replace its rows: no
-- foreign key references it or one of its partitions with an action other than NO ACTION,
-- and no enabled user trigger or non-SELECT rule is on it or on a partition. Run once
-- the table is held against DDL. Every operator and function is qualified.
WITH rel AS (
    SELECT c.oid
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2
), tree AS (
    SELECT t.relid FROM rel, pg_catalog.pg_partition_tree(rel.oid) t
    UNION
    SELECT oid FROM rel
)
SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                   WHERE k.contype OPERATOR(pg_catalog.=) 'f'
                     AND k.confrelid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT relid FROM tree))
                     AND (k.confdeltype OPERATOR(pg_catalog.<>) 'a' OR k.confupdtype OPERATOR(pg_catalog.<>) 'a'))
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                   WHERE g.tgrelid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT relid FROM tree))
                     AND NOT g.tgisinternal AND g.tgenabled OPERATOR(pg_catalog.<>) 'D')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r
                   WHERE r.ev_class OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT relid FROM tree))
                     AND r.ev_type OPERATOR(pg_catalog.<>) '1')

//! Two servers set up differently: batch ranges must select exactly the same keys on both
//! sides whatever their collations, and keys whose `=` is not byte equality are refused.

use crate::support::{s, write_mapping, TestDb};

/// Recreates this test's database on one cluster with ICU en-US as its default collation.
fn recreate_with_icu(db: &TestDb, source: bool) {
    let cluster = if source {
        db.source_cluster
    } else {
        db.target_cluster
    };
    cluster.psql("postgres", &format!("DROP DATABASE {}", db.name));
    cluster.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",
            db.name
        ),
    );
}

const MAPPING: &str = r#"
[mapping]
name = "collations"
own_retailer = "R0001"

[[table]]
source = "s.acct"
target = "r.acct"
key = ["k", "sub"]
scope = "own"
owner = "owner_code"

[table.columns]
k          = "public"
sub        = "public"
v          = "own"
owner_code = "non_public"
"#;

/// Keys that sort very differently under ICU and under C: case, punctuation, spaces,
/// accents, digits.
const KEY: &str = "(ARRAY['a','B','c','D','_','-',' ','é','Z','0'])[g % 10 + 1] \
    || pg_catalog.lpad(((g * 7919) % 40000)::text, 5, '0') || (ARRAY['x','Y','-z',' q'])[g % 4 + 1]";

const EXPECTED: &str = "SELECT k, sub, v FROM s.acct WHERE owner_code = 'R0001' ORDER BY k COLLATE \"C\", sub COLLATE \"C\"";
const ACTUAL: &str = "SELECT k, sub, v FROM r.acct ORDER BY k COLLATE \"C\", sub COLLATE \"C\"";

/// Cutover, then a sync of updates, moves in and out of the scope, deletes and inserts;
/// the target must equal the projection after each, and verify must agree.
fn split_and_sync(db: &TestDb, target_key_collation: &str, source_icu: bool) {
    db.source_sql(&format!(
        "CREATE SCHEMA s; CREATE TABLE s.acct (k text, sub char(2), owner_code text NOT NULL, v text, \
             PRIMARY KEY (k, sub)); \
         INSERT INTO s.acct SELECT {KEY}, (ARRAY['a ','B ','aa'])[g % 3 + 1], \
             CASE WHEN g % 3 = 0 THEN 'R0002' ELSE 'R0001' END, 'v' || g \
         FROM generate_series(1, 20000) g ON CONFLICT DO NOTHING"
    ));
    db.target_sql(&format!(
        "CREATE SCHEMA r; CREATE TABLE r.acct (k text {target_key_collation}, sub char(2), v text, PRIMARY KEY (k, sub))"
    ));
    let path = write_mapping(db, MAPPING);
    let plan = db.shadan(&["plan", "--mapping", s(&path)]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("key order"), "{}", plan.stdout);
    // The index that serves byte-order ranges on a source keyed under a locale.
    let grants = db.shadan(&["grants", "--mapping", s(&path)]);
    let index: Vec<&str> = grants
        .expect_code(0)
        .stdout
        .lines()
        .filter(|l| l.starts_with("CREATE INDEX CONCURRENTLY"))
        .collect();
    if source_icu {
        assert_eq!(index.len(), 1, "{}", grants.stdout);
        db.source_sql(index[0]);
        assert_eq!(
            db.source_sql(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'acct_shadan_key_bytes'"
            ),
            "1"
        );
    } else {
        assert!(index.is_empty(), "{}", grants.stdout);
    }
    db.shadan(&[
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "500",
        "--jobs",
        "2",
    ])
    .expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after cutover");

    db.source_sql(
        "UPDATE s.acct SET v = v || '+' WHERE pg_catalog.hashtext(k) % 10 = 0; \
         UPDATE s.acct SET owner_code = CASE owner_code WHEN 'R0001' THEN 'R0002' ELSE 'R0001' END \
             WHERE pg_catalog.hashtext(k || sub) % 17 = 0; \
         DELETE FROM s.acct WHERE pg_catalog.hashtext(sub || k) % 19 = 0; \
         INSERT INTO s.acct SELECT 'new ' || g || (ARRAY['A','b','_'])[g % 3 + 1], 'a ', 'R0001', 'n' || g \
             FROM generate_series(1, 1000) g",
    );
    let run = db.shadan(&["sync", "--mapping", s(&path), "--json"]);
    run.expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after sync");
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);
    // A second sync finds nothing to do.
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after a rerun");

    // A layout an older shadan cut under the servers' collations is laid out anew.
    db.target_sql("UPDATE shadan.batches SET key_order = NULL");
    db.source_sql("DELETE FROM s.acct WHERE pg_catalog.hashtext(k) % 23 = 0");
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after a relayout");
    assert_eq!(
        db.target_sql("SELECT count(*) FROM shadan.batches WHERE key_order IS NULL"),
        "0"
    );
}

#[test]
fn an_icu_source_and_a_c_target_sync_every_key_exactly() {
    let db = TestDb::new();
    recreate_with_icu(&db, true);
    split_and_sync(&db, "", true);
}

#[test]
fn a_c_source_and_an_icu_target_with_a_column_collation_sync_every_key_exactly() {
    let db = TestDb::new();
    recreate_with_icu(&db, false);
    split_and_sync(&db, "COLLATE \"fr-FR-x-icu\"", false);
}

#[test]
fn keys_whose_equality_is_not_byte_equality_are_refused_by_plan() {
    let db = TestDb::new();
    for (key_type, what) in [
        ("numeric", "numeric"),
        ("float8", "double precision"),
        ("bpchar", "bpchar"),
        ("text COLLATE shadan_ci", "nondeterministic"),
    ] {
        for side in [true, false] {
            let sql = format!(
                "DROP SCHEMA IF EXISTS x CASCADE; DROP COLLATION IF EXISTS shadan_ci; \
                 CREATE COLLATION shadan_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false); \
                 CREATE SCHEMA x; CREATE TABLE x.t (k {key_type} PRIMARY KEY, v text)"
            );
            let plain = "DROP SCHEMA IF EXISTS x CASCADE; CREATE SCHEMA x; CREATE TABLE x.t (k text PRIMARY KEY, v text)";
            // Only one side has the inexact key; the other has text, so types still differ
            // and plan must name the key problem itself.
            let (src, tgt) = if side {
                (sql.as_str(), plain)
            } else {
                (plain, sql.as_str())
            };
            db.source_sql(src);
            db.target_sql(tgt);
            let path = write_mapping(
                &db,
                "[mapping]\nname = \"k\"\nown_retailer = \"R0001\"\n\n[[table]]\nsource = \"x.t\"\ntarget = \"x.t\"\nkey = [\"k\"]\nscope = \"all\"\n\n[table.columns]\nk = \"public\"\nv = \"public\"\n",
            );
            let run = db.shadan(&["plan", "--mapping", s(&path)]);
            run.expect_code(2);
            assert!(
                run.stderr.contains("key") && run.stderr.contains(what),
                "{key_type}: {}",
                run.stderr
            );
        }
    }
}

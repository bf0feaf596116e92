//! Keys as schemas migrated from other databases declare them: `numeric(p, s)`, the form
//! Oracle's `NUMBER(p)` takes, copied, synced through key changes and verified exactly;
//! an unconstrained `numeric` key is refused with what to do about it.

use crate::support::{s, write_mapping, TestDb};

const MAPPING: &str = r#"
[mapping]
name = "numeric-keys"
own_retailer = "R0001"

[[table]]
source = "s.orders"
target = "r.orders"
key = ["id", "line"]
scope = "own"
owner = "owner_code"

[table.columns]
id         = "public"
line       = "public"
v          = "own"
owner_code = "non_public"
"#;

const EXPECTED: &str =
    "SELECT id, line, v FROM s.orders WHERE owner_code = 'R0001' ORDER BY id, line";
const ACTUAL: &str = "SELECT id, line, v FROM r.orders ORDER BY id, line";

#[test]
fn numeric_keys_with_a_declared_scale_copy_sync_and_verify_exactly() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA s; CREATE TABLE s.orders (id numeric(12,0), line numeric(6,2), \
             owner_code text NOT NULL, v text, PRIMARY KEY (id, line)); \
         INSERT INTO s.orders SELECT (g * 7919) % 100000 - 50000, (g % 7) * 1.5, \
             CASE WHEN g % 4 = 0 THEN 'R0002' ELSE 'R0001' END, 'v' || g \
         FROM generate_series(1, 6000) g ON CONFLICT DO NOTHING; \
         INSERT INTO s.orders VALUES ('NaN', 0, 'R0001', 'not a number'), (0, 'NaN', 'R0001', 'zero'), \
             (999999999999, 9999.99, 'R0001', 'largest')",
    );
    db.target_sql(
        "CREATE SCHEMA r; CREATE TABLE r.orders (id numeric(12,0), line numeric(6,2), v text, \
             PRIMARY KEY (id, line))",
    );
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["plan", "--mapping", s(&path)]).expect_code(0);
    db.shadan(&[
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "300",
        "--jobs",
        "2",
    ])
    .expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after cutover");

    // Values written in other forms (5 as 5.0, 1.5 as 1.50000) are the same keys; keys
    // change, rows leave and come, one moves across every batch.
    db.source_sql(
        "UPDATE s.orders SET v = v || '+' WHERE id % 9 = 0; \
         UPDATE s.orders SET id = id + 100000.0 WHERE id % 13 = 1; \
         UPDATE s.orders SET line = line + 0.25 WHERE id % 17 = 2; \
         DELETE FROM s.orders WHERE id % 19 = 3; \
         UPDATE s.orders SET owner_code = 'R0002' WHERE id % 23 = 4; \
         INSERT INTO s.orders VALUES (5.0, 1.50000, 'R0001', 'five') ON CONFLICT (id, line) DO UPDATE SET v = 'five'; \
         UPDATE s.orders SET id = -49999 WHERE id = 999999999999",
    );
    for (what, extra) in [("by changes", None), ("in full", Some("--full"))] {
        let mut args = vec!["sync", "--mapping", s(&path)];
        args.extend(extra);
        db.shadan(&args).expect_code(0);
        db.assert_same_rows(EXPECTED, ACTUAL, &format!("after a sync {what}"));
    }
    assert_eq!(
        db.target_sql("SELECT v FROM r.orders WHERE id = 5 AND line = 1.5"),
        "five"
    );
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);

    // A domain is the type it is over, not its name: the same name over another numeric
    // is refused; a domain over a domain over numeric(12,0) is numeric(12,0).
    db.source_sql(
        "CREATE DOMAIN public.d12 AS numeric(12,0); CREATE DOMAIN public.d12b AS public.d12; \
         ALTER TABLE s.orders ALTER COLUMN id TYPE public.d12b",
    );
    db.target_sql(
        "CREATE DOMAIN public.d12 AS numeric(14,2); CREATE DOMAIN public.d12b AS public.d12; \
         ALTER TABLE r.orders ALTER COLUMN id TYPE public.d12b",
    );
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "type mismatch");
    assert!(
        run.stderr.contains("(over numeric(12,0))") && run.stderr.contains("(over numeric(14,2))"),
        "{}",
        run.stderr
    );
    db.target_sql(
        "ALTER TABLE r.orders ALTER COLUMN id TYPE numeric(14,2); DROP DOMAIN public.d12b; \
         DROP DOMAIN public.d12; CREATE DOMAIN public.d12 AS numeric(12,0); \
         CREATE DOMAIN public.d12b AS public.d12; ALTER TABLE r.orders ALTER COLUMN id TYPE public.d12b",
    );
    db.shadan(&["sync", "--mapping", s(&path), "--full"])
        .expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "keyed on a domain over a domain");

    // An unconstrained numeric key: refused, saying how to declare it.
    db.source_sql("ALTER TABLE s.orders ALTER COLUMN line TYPE numeric");
    db.target_sql("ALTER TABLE r.orders ALTER COLUMN line TYPE numeric");
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "unconstrained numeric");
    assert!(run.stderr.contains("numeric(p, s)"), "{}", run.stderr);
}

//! Keys as schemas migrated from other databases declare them: `numeric(p, s)`, the form
//! Oracle's `NUMBER(p)` takes, and unconstrained `numeric`, whose equal keys can be
//! written in several forms (5 = 5.0 = 5.00): copied, synced through key and form changes
//! and verified exactly, every value in the form the source holds.

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
}

const FORMS: &str = r#"
[mapping]
name = "numeric-forms"
own_retailer = "R0001"

[[table]]
source = "s.p"
target = "r.p"
key = ["id"]
scope = "all"

[table.columns]
id = "public"
v  = "public"

[[table]]
source = "s.c"
target = "r.c"
key = ["id"]
scope = "all"

[table.columns]
id   = "public"
p_id = "public"
"#;

/// Both tables compared as text: a form (5 or 5.00) shows.
fn same_forms(db: &TestDb, what: &str) {
    for (source, target) in [
        (
            "SELECT id::text, v FROM s.p ORDER BY id",
            "SELECT id::text, v FROM r.p ORDER BY id",
        ),
        (
            "SELECT id::text, p_id::text FROM s.c ORDER BY id",
            "SELECT id::text, p_id::text FROM r.c ORDER BY id",
        ),
    ] {
        db.assert_same_rows(source, target, what);
    }
}

#[test]
fn unconstrained_numeric_keys_match_by_value_and_carry_the_sources_form() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA s; CREATE TABLE s.p (id numeric PRIMARY KEY, v text); \
         CREATE TABLE s.c (id numeric PRIMARY KEY, p_id numeric NOT NULL); \
         INSERT INTO s.p SELECT CASE g % 3 WHEN 0 THEN g::numeric WHEN 1 THEN (g || '.0')::numeric \
             ELSE (g || '.000')::numeric END, 'v' || g FROM generate_series(1, 600) g; \
         INSERT INTO s.p VALUES ('NaN', 'nan'), (0.00, 'zero'), (-0.5, 'negative'), (1e-20, 'tiny'), \
             (123456789012345678901234567890.5, 'large'); \
         INSERT INTO s.c SELECT g, (g || '.00')::numeric FROM generate_series(10, 600, 10) g",
    );
    // The target's own foreign key from the child to the parent's key.
    db.target_sql(
        "CREATE SCHEMA r; CREATE TABLE r.p (id numeric PRIMARY KEY, v text); \
         CREATE TABLE r.c (id numeric PRIMARY KEY, p_id numeric NOT NULL REFERENCES r.p (id))",
    );
    let path = write_mapping(&db, FORMS);
    db.shadan(&["cutover", "--mapping", s(&path), "--batch-rows", "100"])
        .expect_code(0);
    same_forms(&db, "after cutover");

    // Keys that change form only (5 -> 5.00, 7.000 -> 7), a form change with a value
    // change, rows deleted and inserted in forms of their own, a child whose reference
    // changes form, and NaN and zero in other forms.
    let nights = [
        "UPDATE s.p SET id = id + 0.00 WHERE id % 5 = 0 AND id < 600; \
         UPDATE s.p SET id = round(id) WHERE id % 7 = 0; \
         UPDATE s.p SET id = id + 1000.0, v = v || '+' WHERE id % 11 = 0 AND id % 10 <> 0 AND id < 600; \
         DELETE FROM s.p WHERE id % 13 = 0 AND id NOT IN (SELECT p_id FROM s.c); \
         INSERT INTO s.p VALUES (2000.50, 'new'), (2001, 'new too'); \
         UPDATE s.c SET p_id = p_id + 0.0 WHERE id % 20 = 0; \
         UPDATE s.p SET id = 0 WHERE id = 0; UPDATE s.p SET id = 'NaN'::numeric WHERE id = 'NaN'",
        "UPDATE s.p SET id = round(id) WHERE id < 600; UPDATE s.c SET p_id = round(p_id)",
    ];
    // The first night is read by changes first, the second in full first (a parent's
    // rows then meet its deletes, which wait for the children's).
    for (night, sql) in nights.iter().enumerate() {
        db.source_sql(sql);
        let mut ways = [("by changes", None), ("in full", Some("--full"))];
        if night == 1 {
            ways.reverse();
        }
        for (what, extra) in ways {
            let mut args = vec!["sync", "--mapping", s(&path)];
            args.extend(extra);
            db.shadan(&args).expect_code(0);
            same_forms(&db, &format!("night {night}, a sync {what}"));
        }
        db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);
    }
    // The second sync of each night wrote nothing: the first wrote every form.
    let run = db.shadan(&["sync", "--mapping", s(&path), "--json"]);
    run.expect_code(0);
    assert!(!run.stdout.contains("\"updated\": 1"), "{}", run.stdout);

    // A form left in the target is a changed row to verify, not a missing one and a leak.
    db.target_sql("UPDATE r.p SET id = 2001.00 WHERE id = 2001");
    let run = db.shadan(&["verify", "--mapping", s(&path)]);
    run.expect_code(3);
    assert!(
        run.stdout.contains("changed 1") && !run.stdout.contains("out_of_scope"),
        "{}",
        run.stdout
    );
    db.target_sql("UPDATE r.p SET id = 2001 WHERE id = 2001");
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);

    // A change of form alone is a key update to a foreign key: one of the retail side's
    // with an action (SET NULL here) would fire, so plan refuses the pair.
    db.target_sql(
        "CREATE TABLE r.own (n int PRIMARY KEY, p numeric REFERENCES r.p (id) ON UPDATE SET NULL)",
    );
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "unconstrained numeric");
}

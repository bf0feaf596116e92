//! The retail side's own constraints (issue 19): a UNIQUE column beside the key that a
//! retail table references by foreign key, and an exclusion constraint, both checked row
//! by row, kept through swaps within and across batches, a value a deleted row frees
//! taken by a new row, and a value moving from one batch's row to another's. The
//! retail schema is never changed by the test.

use crate::support::{s, write_mapping, TestDb};

const MAPPING: &str = r#"
[mapping]
name = "unique"
own_retailer = "R0001"

[[table]]
source = "s.p"
target = "r.p"
key = ["id"]
scope = "all"

[table.columns]
id   = "public"
code = "public"
v    = "public"

[[table]]
source = "s.c"
target = "r.c"
key = ["id"]
scope = "all"

[table.columns]
id   = "public"
p_id = "public"
"#;

/// 400 parents (`code-N`), a child for every tenth, cut into batches of 100; the retail
/// side's own table `r.notes` references five parents' codes. `parent_ddl` is the
/// target's parent table.
fn copied(parent_ddl: &str) -> (TestDb, std::path::PathBuf) {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA s; \
         CREATE TABLE s.p (id int PRIMARY KEY, code text NOT NULL, v text); \
         CREATE TABLE s.c (id int PRIMARY KEY, p_id int NOT NULL REFERENCES s.p (id)); \
         INSERT INTO s.p SELECT g, 'code-' || g, 'v' || g FROM generate_series(1, 400) g; \
         INSERT INTO s.c SELECT g, g FROM generate_series(10, 400, 10) g",
    );
    db.target_sql(&format!(
        "CREATE SCHEMA r; {parent_ddl}; \
         CREATE TABLE r.c (id int PRIMARY KEY, p_id int NOT NULL REFERENCES r.p (id))"
    ));
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["cutover", "--mapping", s(&path), "--batch-rows", "100"])
        .expect_code(0);
    (db, path)
}

fn exact(db: &TestDb) {
    db.assert_same_rows(
        "SELECT id, code, v FROM s.p ORDER BY id",
        "SELECT id, code, v FROM r.p ORDER BY id",
        "r.p",
    );
    db.assert_same_rows(
        "SELECT id, p_id FROM s.c ORDER BY id",
        "SELECT id, p_id FROM r.c ORDER BY id",
        "r.c",
    );
}

/// One night of moves, then a night read in full.
fn nights(db: &TestDb, path: &std::path::Path) {
    // Night 1: a swap within a batch (1, 2), a swap across batches (5, 305), a value a
    // deleted row (3, childless) frees taken by a new row, a value moving from a row of
    // the third batch to one of the second (250 -> 150), and a parent deleted with its
    // child (the parent's delete must wait for the child's).
    db.source_sql(
        "UPDATE s.p SET code = 'x' WHERE id = 1; \
         UPDATE s.p SET code = 'code-1' WHERE id = 2; UPDATE s.p SET code = 'code-2' WHERE id = 1; \
         UPDATE s.p SET code = 'y' WHERE id = 5; \
         UPDATE s.p SET code = 'code-5' WHERE id = 305; UPDATE s.p SET code = 'code-305' WHERE id = 5; \
         DELETE FROM s.p WHERE id = 3; INSERT INTO s.p VALUES (1000, 'code-3', 'reused'); \
         UPDATE s.p SET code = 'code-250b' WHERE id = 250; UPDATE s.p SET code = 'code-250' WHERE id = 150; \
         DELETE FROM s.c WHERE id = 20; DELETE FROM s.p WHERE id = 20",
    );
    db.shadan(&["sync", "--mapping", s(path)]).expect_code(0);
    exact(db);
    db.shadan(&["verify", "--mapping", s(path)]).expect_code(0);
    // Night 2, every batch read in full: the same moves back.
    db.source_sql(
        "UPDATE s.p SET code = 'x' WHERE id = 1; \
         UPDATE s.p SET code = 'code-2' WHERE id = 2; UPDATE s.p SET code = 'code-1' WHERE id = 1; \
         UPDATE s.p SET code = 'y' WHERE id = 5; \
         UPDATE s.p SET code = 'code-305' WHERE id = 305; UPDATE s.p SET code = 'code-5' WHERE id = 5; \
         DELETE FROM s.p WHERE id = 1000; INSERT INTO s.p VALUES (3, 'code-3', 'back'); \
         UPDATE s.p SET code = 'code-150' WHERE id = 150; UPDATE s.p SET code = 'code-250' WHERE id = 250",
    );
    db.shadan(&["sync", "--mapping", s(path), "--full"])
        .expect_code(0);
    exact(db);
    db.shadan(&["verify", "--mapping", s(path)]).expect_code(0);
}

#[test]
fn a_unique_column_a_retail_table_references_is_kept_through_swaps_reuse_and_moves() {
    let (db, path) =
        copied("CREATE TABLE r.p (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text)");
    // The retail side's own table, referencing codes that move, are freed and taken.
    db.target_sql(
        "CREATE TABLE r.notes (n int PRIMARY KEY, code text NOT NULL REFERENCES r.p (code), \
                               p_id int REFERENCES r.p (id)); \
         INSERT INTO r.notes VALUES (1, 'code-1', 1), (2, 'code-2', NULL), (3, 'code-3', NULL), \
                                    (5, 'code-5', 305), (250, 'code-250', NULL)",
    );
    nights(&db, &path);
    assert_eq!(
        db.target_sql("SELECT pg_catalog.string_agg(n || ':' || code || ':' || coalesce(p_id, 0), ',' ORDER BY n) FROM r.notes"),
        "1:code-1:1,2:code-2:0,3:code-3:0,5:code-5:305,250:code-250:0",
        "the retail side's rows are untouched"
    );
}

#[test]
fn an_exclusion_constraint_is_kept_through_swaps_reuse_and_moves() {
    let (db, path) = copied(
        "CREATE TABLE r.p (id int PRIMARY KEY, code text NOT NULL, v text, EXCLUDE USING btree (code WITH =))",
    );
    nights(&db, &path);
}

#[test]
fn a_swap_the_retail_side_cascades_from_is_refused_and_nothing_is_lost() {
    // Replacing rows would fire the retail side's ON DELETE CASCADE: sync updates in
    // place, and a swap of the unique column cannot be written.
    let (db, path) =
        copied("CREATE TABLE r.p (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text)");
    db.target_sql(
        "CREATE TABLE r.owned (n int PRIMARY KEY, p_id int NOT NULL REFERENCES r.p (id) ON DELETE CASCADE); \
         INSERT INTO r.owned SELECT g, g FROM generate_series(1, 400) g",
    );
    db.source_sql(
        "UPDATE s.p SET code = 'x' WHERE id = 1; \
         UPDATE s.p SET code = 'code-1' WHERE id = 2; UPDATE s.p SET code = 'code-2' WHERE id = 1; \
         UPDATE s.p SET v = 'changed' WHERE id = 7",
    );
    let run = db.shadan(&["sync", "--mapping", s(&path)]);
    run.expect_stderr(1, "ON DELETE");
    assert!(run.stderr.contains("r.p"), "{}", run.stderr);
    assert_eq!(db.target_sql("SELECT count(*) FROM r.owned"), "400");
    assert_eq!(
        db.target_sql("SELECT string_agg(code, ',' ORDER BY id) FROM r.p WHERE id IN (1, 2)"),
        "code-1,code-2"
    );
    // Swapped back at the source, the night goes through, in place.
    db.source_sql(
        "UPDATE s.p SET code = 'x' WHERE id = 1; UPDATE s.p SET code = 'code-2' WHERE id = 2; \
         UPDATE s.p SET code = 'code-1' WHERE id = 1",
    );
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    exact(&db);
    assert_eq!(db.target_sql("SELECT count(*) FROM r.owned"), "400");
}

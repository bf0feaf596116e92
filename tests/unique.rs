//! The retail side's own constraints (issue 19): a UNIQUE column beside the key that a
//! retail table references by foreign key, and an exclusion constraint, both checked row
//! by row, kept through swaps within and across batches, a value a deleted row frees
//! taken by a new row, and a value moving from one batch's row to another's. The
//! retail schema is never changed by the test.

use crate::support::held::{wait_until, Held};
use crate::support::{s, write_mapping, Run, TestDb};

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

/// 400 parents (`code-N`), a child for every tenth, cut into batches of 100. `parent_ddl`
/// is the target's parent table.
fn copied(parent_ddl: &str) -> (TestDb, std::path::PathBuf) {
    copied_with(parent_ddl, "")
}

/// [`copied`], the target child's foreign key with `action` (`ON DELETE RESTRICT`).
fn copied_with(parent_ddl: &str, action: &str) -> (TestDb, std::path::PathBuf) {
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
         CREATE TABLE r.c (id int PRIMARY KEY, p_id int NOT NULL REFERENCES r.p (id) {action})"
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

/// Syncs (by changes, then in full), compares with the projection, and verifies.
fn synced(db: &TestDb, path: &std::path::Path) {
    for extra in [None, Some("--full")] {
        let mut args = vec!["sync", "--mapping", s(path)];
        args.extend(extra);
        db.shadan(&args).expect_code(0);
        exact(db);
    }
    db.shadan(&["verify", "--mapping", s(path)]).expect_code(0);
}

#[test]
fn a_customer_merged_into_another_frees_a_value_a_new_row_takes() {
    // A child moves from parent 10 to parent 11, parent 10 is deleted, and a new parent
    // takes its unique code: the parent's write needs the child's, which comes a level
    // later. Also under a child foreign key that is ON DELETE RESTRICT, where the parent is
    // updated in place: a childless parent deleted and its code taken.
    for action in ["", "ON DELETE RESTRICT"] {
        let (db, path) = copied_with(
            "CREATE TABLE r.p (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text)",
            action,
        );
        db.source_sql(
            "UPDATE s.c SET p_id = 11 WHERE id = 10; DELETE FROM s.p WHERE id = 10; \
             INSERT INTO s.p VALUES (1000, 'code-10', 'merged'); \
             DELETE FROM s.p WHERE id = 3; INSERT INTO s.p VALUES (1001, 'code-3', 'reused')",
        );
        synced(&db, &path);
    }
}

#[test]
fn retail_triggers_and_rules_see_updates_never_replaced_rows() {
    // The retail side's own triggers: a hand-written cascade on delete and an audit of
    // updates; and a rule that logs deletes (PostgreSQL refuses rules inside WITH).
    let (db, path) =
        copied("CREATE TABLE r.p (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text)");
    db.target_sql(
        "CREATE TABLE r.notes (n int PRIMARY KEY, p_id int NOT NULL); \
         INSERT INTO r.notes SELECT g, g FROM generate_series(1, 20) g; \
         CREATE TABLE r.audit (op text, id int); CREATE TABLE r.deleted (id int); \
         CREATE FUNCTION r.drop_notes() RETURNS trigger LANGUAGE plpgsql AS \
           $$BEGIN DELETE FROM r.notes WHERE p_id = OLD.id; RETURN OLD; END$$; \
         CREATE FUNCTION r.audit() RETURNS trigger LANGUAGE plpgsql AS \
           $$BEGIN INSERT INTO r.audit VALUES (TG_OP, NEW.id); RETURN NEW; END$$; \
         CREATE TRIGGER drop_notes AFTER DELETE ON r.p FOR EACH ROW EXECUTE FUNCTION r.drop_notes(); \
         CREATE TRIGGER audit AFTER UPDATE ON r.p FOR EACH ROW EXECUTE FUNCTION r.audit(); \
         CREATE RULE log_deletes AS ON DELETE TO r.p DO ALSO INSERT INTO r.deleted VALUES (OLD.id)",
    );
    db.source_sql(
        "UPDATE s.p SET v = 'changed' WHERE id IN (3, 4, 5); DELETE FROM s.p WHERE id = 7",
    );
    synced(&db, &path);
    assert_eq!(
        db.target_sql("SELECT count(*) FROM r.notes"),
        "19",
        "only the deleted row's note went"
    );
    assert_eq!(
        db.target_sql("SELECT string_agg(op || id, ',' ORDER BY id) FROM r.audit"),
        "UPDATE3,UPDATE4,UPDATE5"
    );
    assert_eq!(
        db.target_sql("SELECT string_agg(id::text, ',') FROM r.deleted"),
        "7"
    );
}

/// A partitioned pair keyed on (id, region), regions a and b; `target_ddl` adds to the
/// partitioned target `r.q` and its partitions `r.q_a`, `r.q_b`.
fn partitioned(target_ddl: &str) -> (TestDb, std::path::PathBuf) {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA s; CREATE TABLE s.q (id int, region text, code text NOT NULL, v text, PRIMARY KEY (id, region)); \
         INSERT INTO s.q SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'code-' || g, 'v' FROM generate_series(1, 20) g",
    );
    db.target_sql(&format!(
        "CREATE SCHEMA r; CREATE TABLE r.q (id int, region text, code text NOT NULL, v text, PRIMARY KEY (id, region)) \
             PARTITION BY LIST (region); \
         CREATE TABLE r.q_a PARTITION OF r.q FOR VALUES IN ('a'); \
         CREATE TABLE r.q_b PARTITION OF r.q FOR VALUES IN ('b'); {target_ddl}"
    ));
    let path = write_mapping(
        &db,
        "[mapping]\nname = \"q\"\nown_retailer = \"R0001\"\n\n[[table]]\nsource = \"s.q\"\ntarget = \"r.q\"\n\
         key = [\"id\", \"region\"]\nscope = \"all\"\n\n[table.columns]\nid = \"public\"\nregion = \"public\"\n\
         code = \"public\"\nv = \"public\"\n",
    );
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    (db, path)
}

fn exact_q(db: &TestDb) {
    db.assert_same_rows(
        "SELECT id, region, code, v FROM s.q ORDER BY id",
        "SELECT id, region, code, v FROM r.q ORDER BY id",
        "r.q",
    );
}

#[test]
fn a_cascade_to_one_partition_keeps_rows_in_place_and_a_partitions_own_index_is_kept() {
    // A retail foreign key with ON DELETE CASCADE to one partition: a replaced row would
    // fire it, so rows are updated in place and the retail rows stay.
    let (db, path) = partitioned("ALTER TABLE r.q ADD UNIQUE (code, region)");
    db.target_sql(
        "CREATE TABLE r.own (n int PRIMARY KEY, id int, region text, \
             FOREIGN KEY (id, region) REFERENCES r.q_a (id, region) ON DELETE CASCADE); \
         INSERT INTO r.own SELECT g, g, 'a' FROM generate_series(2, 20, 2) g",
    );
    db.source_sql("UPDATE s.q SET v = 'changed' WHERE id = 6");
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    exact_q(&db);
    assert_eq!(db.target_sql("SELECT count(*) FROM r.own"), "10");
    // A unique index of one partition alone: values swap between two of its rows.
    let (db, path) = partitioned("CREATE UNIQUE INDEX q_a_code ON r.q_a (code)");
    db.source_sql(
        "UPDATE s.q SET code = 'x' WHERE id = 2; UPDATE s.q SET code = 'code-2' WHERE id = 4; \
         UPDATE s.q SET code = 'code-4' WHERE id = 2",
    );
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    exact_q(&db);
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);
}

#[test]
fn a_cascade_added_while_a_sync_runs_stops_it_before_a_row_is_replaced() {
    // The plan saw no foreign key; the retail side adds one with ON DELETE CASCADE while
    // the sync waits for the table. Replacing rows now would fire it.
    let (db, path) =
        copied("CREATE TABLE r.p (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text)");
    db.source_sql("UPDATE s.p SET v = 'changed' WHERE id IN (3, 4)");
    let held = Held::open(
        &db.target_url(),
        "BEGIN; CREATE TABLE r.own (n int PRIMARY KEY, p_id int NOT NULL REFERENCES r.p (id) ON DELETE CASCADE); \
         INSERT INTO r.own SELECT g, g FROM generate_series(1, 400) g;",
    );
    wait_until(30, "the retail session never took its lock", || {
        db.target_sql("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'r'") == "2"
            && db.target_sql(&format!(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                 WHERE d.datname = '{}' AND l.mode = 'ShareRowExclusiveLock' AND l.granted",
                db.name
            )) != "0"
    });
    let child = db
        .command(&["sync", "--mapping", s(&path)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting shadan");
    wait_until(30, "the sync never waited for the table", || {
        db.target_waits_in("LOCK TABLE")
    });
    assert!(held.end("COMMIT;"));
    let run = Run::from(child.wait_with_output().expect("waiting for shadan"));
    run.expect_stderr(1, "since the run began");
    assert_eq!(db.target_sql("SELECT count(*) FROM r.own"), "400");
    // The next sync sees the foreign key and updates in place.
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    exact(&db);
    assert_eq!(db.target_sql("SELECT count(*) FROM r.own"), "400");
}

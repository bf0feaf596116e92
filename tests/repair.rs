//! A full-path sync of a table other mapped tables reference writes its inserts and
//! updates before its children's batches, and its deletes after them. A run that ends in
//! between (killed while a retail session blocks the deletes, or failed in a child's
//! batch) must leave a checkpoint that says what the target then holds, so that every
//! later sync, on either path, deletes what is left: a customer who switched retailer
//! must not stay in the retail database while every command exits 0.

use crate::support::held::{signal, wait_until, Held};
use crate::support::{s, write_mapping, TestDb};

/// Customers (the parent, `scope`) and their notes (the child, with a target foreign key
/// to the customers), 40 of retailer R0001 and 10 of R0003.
fn customers_and_notes(scope: &str) -> (TestDb, std::path::PathBuf) {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA j; \
         CREATE TABLE j.customers (id int PRIMARY KEY, name text, phone text, retailer text NOT NULL); \
         CREATE TABLE j.notes (id int PRIMARY KEY, customer_id int NOT NULL, body text, retailer text NOT NULL); \
         INSERT INTO j.customers SELECT g, 'name ' || g, '090-' || g, CASE WHEN g > 40 THEN 'R0003' ELSE 'R0001' END \
             FROM generate_series(1, 50) g; \
         INSERT INTO j.notes SELECT g, 1, 'note ' || g, 'R0001' FROM generate_series(1, 5) g",
    );
    db.target_sql(
        "CREATE SCHEMA rt; \
         CREATE TABLE rt.customers (id int PRIMARY KEY, name text, phone text); \
         CREATE TABLE rt.notes (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES rt.customers, body text)",
    );
    let table = |name: &str, columns: &str| {
        format!(
            "\n[[table]]\nsource = \"j.{name}\"\ntarget = \"rt.{name}\"\nkey = [\"id\"]\nscope = \"{scope}\"\n\
             owner = \"retailer\"\n\n[table.columns]\nid = \"public\"\nretailer = \"non_public\"\n{columns}"
        )
    };
    let mapping = format!(
        "[mapping]\nname = \"repair\"\nown_retailer = \"R0001\"\n{}{}",
        table("customers", "name = \"own\"\nphone = \"own\"\n"),
        table("notes", "customer_id = \"public\"\nbody = \"own\"\n"),
    );
    let path = write_mapping(&db, &mapping);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    (db, path)
}

/// The target equals the projection computed in SQL: own rows in full; with scope
/// `all`, other retailers' rows with their own columns NULL.
fn assert_exact(db: &TestDb, scope: &str, what: &str) {
    let filter = if scope == "own" {
        "WHERE retailer = 'R0001'"
    } else {
        ""
    };
    let own = |c: &str| format!("CASE WHEN retailer = 'R0001' THEN {c} END");
    db.assert_same_rows(
        &format!(
            "SELECT id, {}, {} FROM j.customers {filter} ORDER BY id",
            own("name"),
            own("phone")
        ),
        "SELECT id, name, phone FROM rt.customers ORDER BY id",
        &format!("{what}: customers"),
    );
    db.assert_same_rows(
        &format!(
            "SELECT id, customer_id, {} FROM j.notes {filter} ORDER BY id",
            own("body")
        ),
        "SELECT id, customer_id, body FROM rt.notes ORDER BY id",
        &format!("{what}: notes"),
    );
}

/// A night where customer 2 leaves the retail side (switches to R0003 with scope `own`,
/// is deleted with scope `all`) and customer 51 arrives: the parent's batch has an
/// insert and a delete, which a count alone would find balanced.
fn night(db: &TestDb, scope: &str) {
    let leave = if scope == "own" {
        "UPDATE j.customers SET retailer = 'R0003' WHERE id = 2"
    } else {
        "DELETE FROM j.customers WHERE id = 2"
    };
    db.source_sql(&format!(
        "{leave}; INSERT INTO j.customers VALUES (51, 'name 51', '090-51', 'R0001')"
    ));
}

/// Then plain syncs repair the target, and verify signs it off.
fn repaired(db: &TestDb, mapping: &std::path::Path, scope: &str) {
    db.shadan(&["sync", "--mapping", s(mapping)]).expect_code(0);
    assert_exact(db, scope, "the first sync after the broken one");
    db.shadan(&["sync", "--mapping", s(mapping)]).expect_code(0);
    assert_exact(db, scope, "the second sync");
    db.shadan(&["verify", "--mapping", s(mapping)])
        .expect_code(0);
}

fn killed_while_the_parents_deletes_wait(scope: &str) {
    let (db, mapping) = customers_and_notes(scope);
    night(&db, scope);
    // A retail session blocks the deletes' foreign-key checks on the child table.
    let held = Held::open(
        &db.target_url(),
        "BEGIN; LOCK TABLE rt.notes IN EXCLUSIVE MODE;",
    );
    let child = db.spawn_quiet(&["sync", "--mapping", s(&mapping), "--full"]);
    wait_until(30, "the sync's deletes never waited on the lock", || {
        db.target_waits_in("WITH gone AS (DELETE")
    });
    // The parent's new customer is in; the one who left is still there.
    assert_eq!(
        db.target_sql("SELECT count(*) FROM rt.customers WHERE id = 51"),
        "1"
    );
    signal(&child, "TERM", 2);
    let mut child = child;
    let status = child.wait().unwrap();
    assert!(!status.success(), "the sync was stopped");
    assert!(held.end("ROLLBACK;"));
    assert_eq!(
        db.target_sql("SELECT count(*) FROM rt.customers WHERE id = 2"),
        "1",
        "the test stopped the sync before its deletes"
    );
    repaired(&db, &mapping, scope);
}

#[test]
fn a_full_sync_killed_before_an_own_parents_deletes_is_repaired_by_the_next() {
    killed_while_the_parents_deletes_wait("own");
}

#[test]
fn a_full_sync_killed_before_an_all_parents_deletes_is_repaired_by_the_next() {
    killed_while_the_parents_deletes_wait("all");
}

#[test]
fn a_full_sync_whose_child_batch_fails_is_repaired_by_the_next() {
    for scope in ["own", "all"] {
        let (db, mapping) = customers_and_notes(scope);
        night(&db, scope);
        // A retail constraint refuses the night's new note: the child's batch fails
        // after the parent's inserts committed.
        db.target_sql("ALTER TABLE rt.notes ADD CONSTRAINT no_new CHECK (id < 6) NOT VALID");
        db.source_sql("INSERT INTO j.notes VALUES (6, 1, 'note 6', 'R0001')");
        let run = db.shadan(&["sync", "--mapping", s(&mapping), "--full"]);
        run.expect_code(1);
        assert_eq!(
            db.target_sql("SELECT count(*) FROM rt.customers WHERE id IN (2, 51)"),
            "2",
            "{scope}: the parent's inserts committed and its deletes did not"
        );
        db.target_sql("ALTER TABLE rt.notes DROP CONSTRAINT no_new");
        repaired(&db, &mapping, scope);
    }
}

//! Sync by changes (`xmin` since the recorded horizon): after every kind of night a
//! joint database sees, the target equals the projection computed independently in SQL,
//! the change path is the one that ran, and it read only what changed. Rows of
//! transactions in flight at a sync, subtransactions and prepared transactions are caught
//! by the next; a killed sync is repaired by a rerun; and both paths stay exact when the
//! transaction counter is moved next to the 2^31 boundary and across it.

use serde_json::Value;

use crate::support::cluster::Cluster;
use crate::support::held::{wait_until, Held};
use crate::support::{reference_data, through_export_views, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// Databases with the reference schema whose source is on a cluster of the test's own:
/// a transaction other tests leave open on a shared cluster holds every snapshot's xmin
/// back (transaction ids are cluster-wide), and with it what a sync must re-read.
fn alone(name: &str) -> TestDb {
    TestDb::on(Cluster::private(name)).reference_schema()
}

fn copied(db: TestDb, n: usize) -> TestDb {
    reference_data(&db, n);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "150"])
        .expect_code(0);
    db
}

/// Runs sync, checks the target against the independent projection, and returns the
/// manifest.
fn sync_exact(db: &TestDb, what: &str, extra: &[&str]) -> Value {
    let mut args = vec!["sync", "--mapping", MAPPING, "--json"];
    args.extend_from_slice(extra);
    let run = db.shadan(&args);
    run.expect_code(0);
    db.assert_reference_copy_exact();
    let m = run.json();
    assert_eq!(m["command"], "sync", "{what}");
    m
}

/// The `sync` report of a table in a manifest.
fn how<'a>(manifest: &'a Value, target: &str) -> &'a Value {
    &manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap()["sync"]
}

fn path(manifest: &Value, target: &str) -> String {
    how(manifest, target)["path"].as_str().unwrap().to_string()
}

/// A deterministic pseudo-random sequence (the seed is printed on failure).
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `k` contract ids chosen at random (by an md5 order salted with `salt`).
fn some_contracts(k: u64, salt: u64) -> String {
    format!(
        "SELECT contract_id FROM joint.contracts ORDER BY md5(contract_id::text || '{salt}') LIMIT {k}"
    )
}

#[test]
fn random_nights_of_every_kind_are_synced_exactly_by_changes() {
    let seed: u64 = std::env::var("SHADAN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202);
    let mut dice = Dice(seed);
    let db = copied(alone("nights"), 2000);
    let total = |db: &TestDb| -> u64 {
        db.source_sql("SELECT count(*) FROM joint.contracts")
            .parse()
            .unwrap()
    };
    for night in 0..10u64 {
        let mut did = Vec::new();
        let mut reread_all = false;
        for _ in 0..(2 + dice.next(4)) {
            let salt = dice.next(1 << 30);
            let k = 1 + dice.next(25);
            let op = dice.next(14);
            let sql = match op {
                0 => {
                    reference_data(&db, k as usize);
                    did.push("inserts");
                    continue;
                }
                1 => format!(
                    "UPDATE joint.supply_points SET address = address || '+' WHERE supply_point_id IN \
                     (SELECT supply_point_id FROM joint.supply_points ORDER BY md5(supply_point_id || '{salt}') LIMIT {k})"
                ),
                2 => format!(
                    "UPDATE joint.contracts SET holder_name = coalesce(holder_name, '') || '*', phone = NULL \
                     WHERE contract_id IN ({})",
                    some_contracts(k, salt)
                ),
                3 => format!(
                    "UPDATE joint.contracts SET retailer_code = CASE retailer_code WHEN 'R0001' THEN 'R0002' ELSE 'R0001' END \
                     WHERE contract_id IN ({})",
                    some_contracts(k, salt)
                ),
                4 => format!(
                    "UPDATE joint.contracts SET supply_kind = CASE supply_kind WHEN 'retail' THEN 'last_resort' ELSE 'retail' END \
                     WHERE contract_id IN ({})",
                    some_contracts(k, salt)
                ),
                5 => format!(
                    "UPDATE joint.contracts SET wheeling_rate_plan = wheeling_rate_plan || 'x' WHERE contract_id IN ({})",
                    some_contracts(k, salt)
                ),
                6 => format!(
                    "DELETE FROM joint.contracts WHERE contract_id IN ({})",
                    some_contracts(k, salt)
                ),
                7 => format!(
                    "UPDATE joint.contracts SET contract_id = contract_id + 100000000 WHERE contract_id IN ({})",
                    some_contracts(k, salt)
                ),
                8 => format!(
                    "DELETE FROM joint.supply_points sp WHERE supply_point_id IN \
                     (SELECT supply_point_id FROM joint.supply_points ORDER BY md5(supply_point_id || '{salt}') LIMIT {}) \
                     AND NOT EXISTS (SELECT 1 FROM joint.contracts c WHERE c.supply_point_id = sp.supply_point_id) \
                     AND NOT EXISTS (SELECT 1 FROM joint.fit_purchase_contracts f WHERE f.supply_point_id = sp.supply_point_id)",
                    k * 20
                ),
                9 => "VACUUM FULL joint.contracts".to_string(),
                10 => "CLUSTER joint.supply_points USING supply_points_pkey".to_string(),
                11 => "VACUUM FREEZE joint.contracts".to_string(),
                12 => {
                    reread_all = true;
                    "BEGIN; CREATE TEMP TABLE keep AS SELECT * FROM joint.contracts; TRUNCATE joint.contracts; \
                     INSERT INTO joint.contracts SELECT * FROM keep; COMMIT"
                        .to_string()
                }
                _ => {
                    reread_all = true;
                    "ALTER TABLE joint.contracts ALTER COLUMN wheeling_rate_plan TYPE text USING wheeling_rate_plan || ''"
                        .to_string()
                }
            };
            db.source_sql(&sql);
            did.push(
                [
                    "inserts",
                    "public",
                    "own",
                    "owner",
                    "only",
                    "non_public",
                    "delete",
                    "key",
                    "sp delete",
                    "vacuum full",
                    "cluster",
                    "freeze",
                    "truncate+reload",
                    "rewrite",
                ][op as usize],
            );
        }
        let what = format!("seed {seed}, night {night}: {did:?}");
        let m = sync_exact(&db, &what, &[]);
        for table in ["retail.contracts", "retail.supply_points"] {
            assert_eq!(
                path(&m, table),
                "changes",
                "{what}: {table}: {}",
                how(&m, table)
            );
        }
        for table in ["retail.contracts", "retail.supply_points"] {
            // Lost rows are found by hash buckets: no batch had to send its keys.
            assert_eq!(
                how(&m, table)["source_keys"],
                0,
                "{what}: {table}: {}",
                how(&m, table)
            );
        }
        let read = how(&m, "retail.contracts")["source_rows"].as_u64().unwrap();
        if !reread_all {
            assert!(
                read < total(&db) / 4,
                "{what}: {read} contract rows read from the source for a night of small changes"
            );
        }
    }
    // An operator's --full reads everything, and says so.
    let m = sync_exact(&db, "--full", &["--full"]);
    assert_eq!(path(&m, "retail.contracts"), "full");
    assert_eq!(how(&m, "retail.contracts")["reason"], "--full was given");
    db.shadan(&["verify", "--mapping", MAPPING, "--deep"])
        .expect_code(0);
}

#[test]
fn a_night_with_nothing_changed_reads_no_rows_and_writes_nothing() {
    let db = copied(alone("quiet"), 1000);
    let m = sync_exact(&db, "nothing changed", &[]);
    for table in ["retail.contracts", "retail.supply_points"] {
        let h = how(&m, table);
        assert_eq!(h["path"], "changes", "{h}");
        // A count is all that crossed.
        assert_eq!(h["source_rows"], 0, "{table}: {h}");
        assert_eq!(h["source_keys"], 0, "{table}: {h}");
        assert_eq!(h["batches_skipped"], h["batches"], "{table}: {h}");
    }
}

#[test]
fn transactions_open_across_a_sync_subtransactions_and_prepared_ones_are_caught_next() {
    let db = copied(TestDb::with_reference_schema(), 600);
    let own = |offset: u32| {
        db.source_sql(&format!(
            "SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' \
             ORDER BY contract_id OFFSET {offset} LIMIT 1"
        ))
    };
    let (a, b, c, d) = (own(5), own(200), own(300), own(100));
    let wait_for_writes = |n: &str| {
        wait_until(20, "the held transactions to write", || {
            db.source_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state = 'idle in transaction' AND backend_xid IS NOT NULL",
            ) == n
        });
        // A transaction that ends after theirs began: the snapshot's xmax then lies past
        // them, so only its xmin still shows they were in flight.
        db.source_sql("SELECT pg_catalog.pg_current_xact_id()");
    };
    // Open before the sync's snapshot, committed after it: updates only, so no count
    // gives them away; one in a subtransaction.
    let held = Held::open(
        &db.source_url(),
        &format!(
            "BEGIN; UPDATE joint.contracts SET holder_name = 'in flight' WHERE contract_id = {a}; \
             SAVEPOINT s; UPDATE joint.contracts SET phone = 'sub' WHERE contract_id = {b}; RELEASE s;"
        ),
    );
    wait_for_writes("1");
    // A prepared transaction that outlives two syncs.
    let prepared = format!("shadan_{}", db.name);
    db.source_sql(&format!(
        "BEGIN; UPDATE joint.contracts SET retailer_code = 'R0003' WHERE contract_id = {d}; \
         UPDATE joint.supply_points SET area = 'prepared' WHERE supply_point_id = \
             (SELECT min(supply_point_id) FROM joint.supply_points); \
         PREPARE TRANSACTION '{prepared}'"
    ));
    // This sync sees none of it (the projection SQL neither).
    let m = sync_exact(&db, "while open", &[]);
    assert_eq!(path(&m, "retail.contracts"), "changes");
    assert!(held.end("COMMIT;"), "committing the held transaction");
    let m = sync_exact(&db, "after the commit", &[]);
    assert_eq!(path(&m, "retail.contracts"), "changes");
    assert_eq!(
        db.target_sql(&format!(
            "SELECT count(*) FROM retail.contracts WHERE holder_name = 'in flight' AND contract_id = {a}"
        )),
        "1",
        "the update committed after the sync's snapshot arrived"
    );
    db.source_sql(&format!("COMMIT PREPARED '{prepared}'"));
    let m = sync_exact(&db, "after COMMIT PREPARED", &[]);
    assert_eq!(path(&m, "retail.contracts"), "changes");
    assert_eq!(path(&m, "retail.supply_points"), "changes");
    // A delete and an insert in flight across a sync.
    let held = Held::open(
        &db.source_url(),
        &format!(
            "BEGIN; DELETE FROM joint.contracts WHERE contract_id = {c}; \
             INSERT INTO joint.contracts (contract_id, supply_point_id, holder_name, retailer_code, supply_kind, start_date) \
             SELECT 900000001, supply_point_id, 'late', 'R0001', 'retail', date '2026-12-01' FROM joint.contracts \
             WHERE contract_id = {a};"
        ),
    );
    wait_for_writes("1");
    sync_exact(&db, "while the delete is open", &[]);
    assert!(held.end("COMMIT;"), "committing the held transaction");
    let m = sync_exact(&db, "after the delete", &[]);
    assert_eq!(path(&m, "retail.contracts"), "changes");
    assert_eq!(
        db.target_sql(&format!(
            "SELECT count(*) FROM retail.contracts WHERE contract_id IN ({c}, 900000001)"
        )),
        "1",
        "the in-flight delete and insert both arrived"
    );
}

#[test]
fn a_sync_killed_midway_is_completed_by_the_next() {
    let db = copied(TestDb::with_reference_schema(), 3000);
    db.source_sql(
        "UPDATE joint.contracts SET holder_name = coalesce(holder_name, '') || ' (moved)' WHERE contract_id % 3 = 0; \
         DELETE FROM joint.contracts WHERE contract_id % 97 = 0",
    );
    // A row lock on one of the rows to delete holds the run between the changed rows,
    // which it commits, and the deletes.
    let lock = Held::open(
        &db.target_url(),
        "BEGIN; SELECT 1 FROM retail.contracts WHERE contract_id = \
         (SELECT min(contract_id) FROM retail.contracts WHERE contract_id % 97 = 0) FOR UPDATE;",
    );
    let mut child = db.spawn_quiet(&["sync", "--mapping", MAPPING, "--jobs", "1"]);
    wait_until(60, "the sync to commit a few batches", || {
        db.try_target_sql(
            "SELECT count(*) FROM shadan.batches b JOIN shadan.runs r USING (run_id) \
             WHERE r.command = 'sync' AND r.status = 'running'",
        )
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n >= 3)
    });
    child.kill().expect("killing shadan");
    child.wait().expect("waiting for shadan");
    lock.end("ROLLBACK;");
    let m = sync_exact(&db, "after the kill", &[]);
    assert_eq!(path(&m, "retail.contracts"), "changes");
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn both_paths_stay_exact_next_to_and_across_the_2_31_xid_boundary() {
    let db = copied(alone("wrap"), 400);
    let cluster = db.source_cluster;
    let change = |db: &TestDb, salt: u64| {
        db.source_sql(&format!(
            "UPDATE joint.contracts SET holder_name = holder_name || '{salt}' WHERE contract_id IN ({}); \
             UPDATE joint.contracts SET retailer_code = 'R0005' WHERE contract_id IN ({}); \
             DELETE FROM joint.contracts WHERE contract_id IN ({})",
            some_contracts(7, salt),
            some_contracts(3, salt + 1),
            some_contracts(2, salt + 2),
        ));
        reference_data(db, 3);
    };
    change(&db, 1);
    assert_eq!(
        path(&sync_exact(&db, "before", &[]), "retail.contracts"),
        "changes"
    );
    let freeze_all = |db: &TestDb| {
        db.source_sql("ALTER DATABASE template0 ALLOW_CONNECTIONS true");
        for name in ["postgres", "template0", "template1", &db.name] {
            cluster.psql(name, "VACUUM FREEZE");
        }
        db.source_sql("ALTER DATABASE template0 ALLOW_CONNECTIONS false");
    };
    // More than 2^30 transactions later: too far for 32-bit arithmetic, so read in full.
    cluster.restart_at_xid((1 << 30) + (1 << 20));
    change(&db, 2);
    let m = sync_exact(&db, "after the first jump", &[]);
    assert_eq!(path(&m, "retail.contracts"), "full");
    assert!(
        how(&m, "retail.contracts")["reason"]
            .as_str()
            .unwrap()
            .contains("wraparound"),
        "{}",
        how(&m, "retail.contracts")
    );
    change(&db, 3);
    assert_eq!(
        path(&sync_exact(&db, "after", &[]), "retail.contracts"),
        "changes"
    );
    // Right below 2^31 (a horizon just under 2^30 behind), then across it, where a
    // frozen tuple's raw xmin turns "in the future" in 32 bits. The restart alone makes
    // the first sync read in full: a restart is what a restore from a copy needs.
    freeze_all(&db);
    cluster.restart_at_xid((1 << 31) - 32768);
    change(&db, 4);
    let m = sync_exact(&db, "below 2^31, after a restart", &[]);
    assert_eq!(path(&m, "retail.contracts"), "full");
    assert!(
        how(&m, "retail.contracts")["reason"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{}",
        how(&m, "retail.contracts")
    );
    change(&db, 5);
    assert_eq!(
        path(&sync_exact(&db, "below 2^31", &[]), "retail.contracts"),
        "changes"
    );
    db.source_sql(
        "DO $$ BEGIN FOR i IN 1..34000 LOOP PERFORM pg_catalog.pg_current_xact_id(); COMMIT; END LOOP; END $$",
    );
    let next: u64 = db
        .source_sql("SELECT pg_catalog.pg_current_xact_id()::text")
        .parse()
        .unwrap();
    assert!(next > 1 << 31, "the counter crossed 2^31: {next}");
    change(&db, 6);
    let m = sync_exact(&db, "across 2^31", &[]);
    assert_eq!(path(&m, "retail.contracts"), "changes");
    assert!(how(&m, "retail.contracts")["source_rows"].as_u64().unwrap() < 100);
    db.shadan(&["verify", "--mapping", MAPPING, "--deep"])
        .expect_code(0);
}

#[test]
fn the_granted_roles_read_changes_directly_and_through_export_views_and_an_old_grant_reads_in_full()
{
    let db = copied(TestDb::with_reference_schema(), 800);
    let night = |salt: u64| {
        db.source_sql(&format!(
            "UPDATE joint.contracts SET holder_name = holder_name || '{salt}' WHERE contract_id IN ({}); \
             UPDATE joint.contracts SET retailer_code = 'R0009' WHERE contract_id IN ({}); \
             DELETE FROM joint.contracts WHERE contract_id IN ({})",
            some_contracts(9, salt),
            some_contracts(4, salt + 1),
            some_contracts(3, salt + 2),
        ));
    };
    let sync_as = |role: &str, mapping: &str, what: &str| -> Value {
        let run = db.shadan_as(Some(role), None, &["sync", "--mapping", mapping, "--json"]);
        run.expect_code(0);
        db.assert_reference_copy_exact();
        let m = run.json();
        assert_eq!(m["command"], "sync", "{what}");
        m
    };
    // Column grants, as `shadan grants` prints them now.
    let role = format!("direct_{}", db.name);
    let script = db.shadan(&["grants", "--mapping", MAPPING, "--role", &role]);
    script.expect_code(0);
    assert!(script.stdout.contains("\"xmin\""), "{}", script.stdout);
    db.source_sql(&script.stdout);
    night(1);
    let m = sync_as(&role, MAPPING, "direct");
    assert_eq!(
        path(&m, "retail.contracts"),
        "changes",
        "{}",
        how(&m, "retail.contracts")
    );
    // The same role after a DBA took xmin back (a script of an older shadan): read in
    // full, and told why.
    db.source_sql(&format!(
        "REVOKE SELECT (xmin) ON joint.contracts FROM {role}"
    ));
    night(2);
    let m = sync_as(&role, MAPPING, "without xmin");
    assert_eq!(path(&m, "retail.contracts"), "full");
    assert!(
        how(&m, "retail.contracts")["reason"]
            .as_str()
            .unwrap()
            .contains("xmin"),
        "{}",
        how(&m, "retail.contracts")
    );
    // Through export views, which carry the table's xmin as shadan_xmin.
    let viewer = format!("viewer_{}", db.name);
    let views = through_export_views(&db, &crate::support::reference_mapping(), &viewer);
    night(3);
    let m = sync_as(&viewer, crate::support::s(&views), "views");
    assert_eq!(
        path(&m, "retail.contracts"),
        "changes",
        "{}",
        how(&m, "retail.contracts")
    );
    night(4);
    let m = sync_as(&viewer, crate::support::s(&views), "views, again");
    assert_eq!(path(&m, "retail.contracts"), "changes");
    assert!(how(&m, "retail.contracts")["source_rows"].as_u64().unwrap() < 100);
}

#[test]
fn a_change_of_definition_that_rewrites_no_row_is_read_in_full() {
    let db = copied(TestDb::with_reference_schema(), 300);
    let reason = |m: &Value| {
        how(m, "retail.contracts")["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // Two public columns renamed into each other's places: no tuple is written, yet every
    // row's projection changes.
    db.source_sql(
        "ALTER TABLE joint.contracts RENAME COLUMN holder_name TO tmp; \
         ALTER TABLE joint.contracts RENAME COLUMN holder_name_kana TO holder_name; \
         ALTER TABLE joint.contracts RENAME COLUMN tmp TO holder_name_kana",
    );
    let m = sync_exact(&db, "columns swapped", &[]);
    assert_eq!(path(&m, "retail.contracts"), "full");
    assert!(reason(&m).contains("definitions"), "{}", reason(&m));
    assert_eq!(path(&m, "retail.supply_points"), "changes");
    let m = sync_exact(&db, "the night after", &[]);
    assert_eq!(path(&m, "retail.contracts"), "changes");
    // A public column dropped and added again with a default: no rewrite either.
    db.source_sql(
        "ALTER TABLE joint.supply_points DROP COLUMN area; \
         ALTER TABLE joint.supply_points ADD COLUMN area text NOT NULL DEFAULT 'moved'",
    );
    let m = sync_exact(&db, "column re-added", &[]);
    assert_eq!(path(&m, "retail.supply_points"), "full");
    // Another own_retailer: another projection.
    let text = crate::support::reference_mapping()
        .replace("own_retailer = \"R0001\"", "own_retailer = \"R0002\"");
    let other = crate::support::write_mapping(&db, &text);
    let run = db.shadan(&["sync", "--mapping", crate::support::s(&other), "--json"]);
    run.expect_code(0);
    assert_eq!(path(&run.json(), "retail.contracts"), "full");
}

#[test]
fn a_change_to_non_public_columns_alone_leaves_no_trace_on_the_retail_side() {
    let db = copied(TestDb::with_reference_schema(), 400);
    let state = |db: &TestDb| {
        db.target_rows(
            "SELECT target_table, batch_no, rows, lanes, run_id, written_at FROM shadan.batches ORDER BY 1, 2",
        )
    };
    let before = state(&db);
    // Meter changes and change times of every retailer's supply points: the mapping keeps
    // them from retail, and so must the sync's own records.
    db.source_sql(
        "UPDATE joint.supply_points SET meter_id = 'M-NEW', updated_at = now() \
         WHERE supply_point_id IN (SELECT supply_point_id FROM joint.supply_points ORDER BY 1 LIMIT 7); \
         UPDATE joint.contracts SET wheeling_rate_plan = 'changed' WHERE contract_id % 10 = 3",
    );
    let printed = sync_exact(&db, "non-public only", &[]);
    assert!(
        how(&printed, "retail.supply_points")["source_rows"]
            .as_u64()
            .unwrap()
            >= 7,
        "the operator sees what was re-read: {}",
        how(&printed, "retail.supply_points")
    );
    assert_eq!(state(&db), before, "no checkpoint moved but the horizons");
    let stored = db.target_sql(
        "SELECT manifest::text FROM shadan.runs WHERE command = 'sync' ORDER BY run_id DESC LIMIT 1",
    );
    for hidden in ["source_rows", "source_bytes", "source_keys"] {
        assert!(
            !stored.contains(hidden),
            "{hidden} is stored in the target: {stored}"
        );
    }
    let stored: Value = serde_json::from_str(&stored).unwrap();
    for t in stored["tables"].as_array().unwrap() {
        assert_eq!(t["batches_written_this_run"], 0, "{t}");
        assert_eq!(t["sync"]["batches_skipped"], t["sync"]["batches"], "{t}");
    }
}

#[test]
fn a_source_database_restored_from_a_copy_is_read_in_full() {
    let db = copied(TestDb::with_reference_schema(), 300);
    let copy = format!("{}_copy", db.name);
    db.source_cluster.psql(
        "postgres",
        &format!("CREATE DATABASE {copy} TEMPLATE {}", db.name),
    );
    db.source_sql(
        "UPDATE joint.contracts SET holder_name = 'after the copy' WHERE contract_id % 7 = 1",
    );
    sync_exact(&db, "after the copy was taken", &[]);
    // The copy, with the transaction ids it had, takes the database's place.
    let old = format!("{}_old", db.name);
    for sql in [
        format!("ALTER DATABASE {} RENAME TO {old}", db.name),
        format!("ALTER DATABASE {copy} RENAME TO {}", db.name),
    ] {
        db.source_cluster.psql("postgres", &sql);
    }
    let m = sync_exact(&db, "after the restore", &[]);
    assert_eq!(path(&m, "retail.contracts"), "full");
    db.source_cluster
        .psql("postgres", &format!("DROP DATABASE {old} WITH (FORCE)"));
}

#[test]
fn an_enum_label_renamed_under_a_range_type_is_read_in_full() {
    let db = TestDb::new();
    let types = "CREATE SCHEMA s; CREATE TYPE s.lvl AS ENUM ('low', 'mid', 'high'); \
                 CREATE TYPE s.lvlrange AS RANGE (subtype = s.lvl);";
    db.source_sql(&format!(
        "{types} CREATE TABLE s.t (id int PRIMARY KEY, r s.lvlrange, secret text); \
         INSERT INTO s.t SELECT g, '[low,mid)', 'x' FROM generate_series(1, 300) g"
    ));
    db.target_sql(&format!(
        "{types} ALTER TYPE s.lvl ADD VALUE 'mid2'; CREATE TABLE s.t (id int PRIMARY KEY, r s.lvlrange)"
    ));
    let mapping = crate::support::write_mapping(
        &db,
        "[mapping]\nname = \"ranges\"\nown_retailer = \"R0001\"\n\n[[table]]\nsource = \"s.t\"\n\
         target = \"s.t\"\nkey = [\"id\"]\nscope = \"all\"\n\n[table.columns]\nid = \"public\"\n\
         r = \"public\"\nsecret = \"non_public\"\n",
    );
    let mapping = crate::support::s(&mapping);
    db.shadan(&["cutover", "--mapping", mapping]).expect_code(0);
    db.source_sql("ALTER TYPE s.lvl RENAME VALUE 'mid' TO 'mid2'");
    let run = db.shadan(&["sync", "--mapping", mapping, "--json"]);
    run.expect_code(0);
    assert_eq!(run.json()["tables"][0]["sync"]["path"], "full");
    db.assert_same_rows(
        "SELECT id, r::text FROM s.t ORDER BY 1",
        "SELECT id, r::text FROM s.t ORDER BY 1",
        "ranges",
    );
}

#[test]
fn lost_rows_are_found_whatever_the_key_columns_are_called() {
    let db = TestDb::new();
    let ddl = "CREATE SCHEMA s; CREATE TABLE s.w (shadan_b int, shadan_key_1 text, shadan_h text, \
               PRIMARY KEY (shadan_b, shadan_key_1)";
    db.source_sql(&format!(
        "{ddl}, secret text); \
         INSERT INTO s.w SELECT g, 'k' || g % 3, 'v' || g, 's' FROM generate_series(1, 600) g"
    ));
    db.target_sql(&format!("{ddl})"));
    let mapping = crate::support::write_mapping(
        &db,
        "[mapping]\nname = \"names\"\nown_retailer = \"R0001\"\n\n[[table]]\nsource = \"s.w\"\n\
         target = \"s.w\"\nkey = [\"shadan_b\", \"shadan_key_1\"]\nscope = \"all\"\n\n[table.columns]\n\
         shadan_b = \"public\"\nshadan_key_1 = \"public\"\nshadan_h = \"public\"\nsecret = \"non_public\"\n",
    );
    let mapping = crate::support::s(&mapping);
    db.shadan(&["cutover", "--mapping", mapping, "--batch-rows", "100"])
        .expect_code(0);
    db.source_sql(
        "DELETE FROM s.w WHERE shadan_b % 50 = 7; UPDATE s.w SET shadan_h = 'x' WHERE shadan_b = 3",
    );
    let run = db.shadan(&["sync", "--mapping", mapping, "--json"]);
    run.expect_code(0);
    let how = &run.json()["tables"][0]["sync"];
    assert_eq!(how["path"], "changes", "{how}");
    assert_eq!(how["source_keys"], 0, "found by hash buckets: {how}");
    db.assert_same_rows(
        "SELECT shadan_b, shadan_key_1, shadan_h FROM s.w ORDER BY 1, 2",
        "SELECT shadan_b, shadan_key_1, shadan_h FROM s.w ORDER BY 1, 2",
        "names",
    );
}

#[test]
fn changed_rows_of_a_type_the_driver_must_look_up_stream_without_stalling() {
    let db = TestDb::new();
    let ddl = "CREATE TYPE public.mood AS ENUM ('a', 'b'); \
               CREATE TABLE public.t (id int8 PRIMARY KEY, v public.mood)";
    db.source_sql(ddl);
    db.target_sql(ddl);
    db.source_sql("INSERT INTO public.t SELECT g, 'a' FROM generate_series(1, 5000) g");
    let path = crate::support::write_mapping(
        &db,
        "[mapping]\nname = \"m\"\nown_retailer = \"R1\"\n\n[[table]]\nsource = \"public.t\"\n\
         target = \"public.t\"\nkey = [\"id\"]\nscope = \"all\"\n\n[table.columns]\n\
         id = \"public\"\nv = \"public\"\n",
    );
    let path = crate::support::s(&path);
    db.shadan(&["cutover", "--mapping", path]).expect_code(0);
    // Every row rewritten, half of them changed: thousands of enum values to stream.
    db.source_sql("UPDATE public.t SET v = CASE WHEN id % 2 = 0 THEN 'b'::public.mood ELSE v END");
    let mut child = db.spawn_quiet(&["sync", "--mapping", path]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for shadan") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("sync stalled reading the changed rows");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(status.success(), "sync failed: {status}");
    db.assert_same_rows(
        "SELECT id, v::text FROM public.t ORDER BY id",
        "SELECT id, v::text FROM public.t ORDER BY id",
        "after the enum night",
    );
    db.shadan(&["verify", "--mapping", path]).expect_code(0);
}

/// How often the source's index on the owner column has been scanned, once every other
/// session on the source has ended (a session's counters reach the statistics as it
/// ends).
fn owner_index_scans(db: &TestDb) -> u64 {
    wait_until(10, "the source's other sessions did not end", || {
        db.source_sql(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ) == "0"
    });
    db.source_sql(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'contracts_retailer_idx'",
    )
    .parse()
    .unwrap()
}

/// A night of deletes, scope exits and entries, and updates of own columns.
fn night_of_losses(db: &TestDb, n: u32) {
    db.source_sql(&format!(
        "DELETE FROM joint.contracts WHERE contract_id IN (SELECT contract_id FROM joint.contracts \
           WHERE retailer_code = 'R0001' ORDER BY md5(contract_id::text || '{n}') LIMIT 9); \
         UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id IN (SELECT contract_id \
           FROM joint.contracts WHERE retailer_code = 'R0001' ORDER BY md5(contract_id::text || 'x{n}') LIMIT 6); \
         UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id IN (SELECT contract_id \
           FROM joint.contracts WHERE retailer_code = 'R0003' AND supply_kind = 'retail' \
           ORDER BY md5(contract_id::text || 'y{n}') LIMIT 4); \
         UPDATE joint.contracts SET phone = '022-555-{n:04}' WHERE contract_id IN (SELECT contract_id \
           FROM joint.contracts WHERE retailer_code = 'R0001' ORDER BY md5(contract_id::text || 'z{n}') LIMIT 5)"
    ));
}

#[test]
fn the_rows_in_scope_are_read_in_order_when_they_are_many_and_through_the_owner_s_index_when_few() {
    // The successor retailer holds most contracts: every statement that visits all its
    // rows reads the table in order, never through the owner's index.
    let db = copied(alone("reach-broad"), 600);
    db.source_sql("ANALYZE joint.contracts");
    night_of_losses(&db, 1);
    let before = owner_index_scans(&db);
    let printed = sync_exact(&db, "a large share", &[]);
    assert_eq!(path(&printed, "retail.contracts"), "changes");
    assert_eq!(
        owner_index_scans(&db),
        before,
        "a scope holding most of the table was read through the owner's index"
    );

    // Nine times as many contracts of another retailer: the own ones are now a small
    // share, which the planner may reach through the owner's index, with the same result.
    let db = alone("reach-narrow");
    reference_data(&db, 600);
    db.source_sql(
        "INSERT INTO joint.contracts (contract_id, supply_point_id, holder_name, holder_name_kana, phone, \
           contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, \
           retailer_code, supply_kind, wheeling_contract_no, wheeling_rate_plan, start_date, end_date) \
         SELECT contract_id + g * 1000000, supply_point_id, holder_name, holder_name_kana, phone, \
           contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, \
           'R0003', supply_kind, wheeling_contract_no, wheeling_rate_plan, start_date, end_date \
         FROM joint.contracts, generate_series(1, 9) g; \
         ANALYZE joint.contracts",
    );
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "150"])
        .expect_code(0);
    let mut used = 0;
    for n in 1..=3 {
        night_of_losses(&db, n);
        let before = owner_index_scans(&db);
        // Counted before the check, whose own query may use the index too.
        let run = db.shadan(&["sync", "--mapping", MAPPING, "--json"]);
        run.expect_code(0);
        used += owner_index_scans(&db) - before;
        db.assert_reference_copy_exact();
        assert_eq!(path(&run.json(), "retail.contracts"), "changes");
    }
    assert!(
        used > 0,
        "the owner's index was never used for a small share"
    );
}

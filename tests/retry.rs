//! `--retry N` for unattended jobs: a run whose link drops, or whose server stops at once
//! and starts again, is run again after a wait, logs each retry, and ends exactly as a
//! clean run would (the target equals the projection computed in SQL, and verify agrees).

use std::process::{Child, Stdio};

use crate::support::cluster::Cluster;
use crate::support::held::{wait_until, Held};
use crate::support::proxy::Proxy;
use crate::support::{reference_data, Run, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// What a retry logs.
const RETRIED: &str = "running it again";

/// Starts `shadan` with `args` and `--retry 5 --retry-wait 1`, reaching the servers at
/// the given URLs.
fn spawn_retrying(db: &TestDb, args: &[&str], source: &str, target: &str) -> Child {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--retry", "5", "--retry-wait", "1"]);
    db.command(&all)
        .env("SHADAN_SOURCE", source)
        .env("SHADAN_TARGET", target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting shadan")
}

/// Waits until a `shadan` session on `cluster` waits on a lock.
fn wait_for_lock_wait(db: &TestDb, cluster: &Cluster) {
    wait_until(60, "shadan never waited on the held lock", || {
        cluster.psql(
            &db.name,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'shadan' \
             AND wait_event_type = 'Lock' AND datname = current_database()",
        ) == "t"
    });
}

/// A night with updates of own columns, a deletion and a customer who switched away.
fn night(db: &TestDb, salt: u32) {
    db.source_sql(&format!(
        "UPDATE joint.contracts SET phone = '090-{salt:04}-0000' WHERE contract_id % 13 = {m}; \
         DELETE FROM joint.contracts WHERE contract_id = (SELECT max(contract_id) FROM joint.contracts \
             WHERE retailer_code = 'R0001'); \
         UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id = (SELECT min(contract_id) \
             FROM joint.contracts WHERE retailer_code = 'R0001')",
        m = salt % 13
    ));
}

fn finished_exactly(db: &TestDb, child: Child, what: &str) {
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(0);
    assert!(
        run.stderr.contains(RETRIED),
        "{what}: no retry logged:\n{}",
        run.stderr
    );
    db.assert_reference_copy_exact();
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn a_cutover_whose_links_drop_retries_resumes_and_ends_exact() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 20_000);
    let (source, target) = (
        Proxy::start(db.source_cluster.port),
        Proxy::start(db.target_cluster.port),
    );
    let mut child = spawn_retrying(
        &db,
        &[
            "cutover",
            "--mapping",
            MAPPING,
            "--jobs",
            "2",
            "--batch-rows",
            "100",
        ],
        &source.url(&db.name),
        &target.url(&db.name),
    );
    db.wait_for_batches(&mut child, 10);
    source.cut();
    target.cut();
    finished_exactly(&db, child, "cutover");
}

#[test]
fn a_sync_whose_target_link_drops_while_it_waits_retries_and_ends_exact() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 2000);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "300"])
        .expect_code(0);
    night(&db, 1);
    let (source, target) = (
        Proxy::start(db.source_cluster.port),
        Proxy::start(db.target_cluster.port),
    );
    let held = Held::open(
        &db.target_url(),
        "BEGIN; LOCK TABLE retail.contracts IN EXCLUSIVE MODE;",
    );
    let child = spawn_retrying(
        &db,
        &["sync", "--mapping", MAPPING],
        &source.url(&db.name),
        &target.url(&db.name),
    );
    wait_for_lock_wait(&db, db.target_cluster);
    target.cut();
    assert!(held.end("ROLLBACK;"));
    finished_exactly(&db, child, "sync");
}

#[test]
fn an_immediate_stop_and_restart_of_either_server_is_retried_and_ends_exact() {
    let (src, tgt) = (
        Cluster::private("restart-source"),
        Cluster::private("restart-target"),
    );
    let db = TestDb::between(src, tgt).reference_schema();
    reference_data(&db, 2000);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "300"])
        .expect_code(0);
    let (source_url, target_url) = (db.source_url(), db.target_url());
    for (salt, (side, cluster, lock)) in [
        (
            "source",
            src,
            "LOCK TABLE joint.contracts IN ACCESS EXCLUSIVE MODE",
        ),
        (
            "target",
            tgt,
            "LOCK TABLE retail.contracts IN EXCLUSIVE MODE",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        night(&db, salt as u32 + 2);
        let held = Held::open(&cluster.url(&db.name), &format!("BEGIN; {lock};"));
        let child = spawn_retrying(
            &db,
            &["sync", "--mapping", MAPPING],
            &source_url,
            &target_url,
        );
        wait_for_lock_wait(&db, cluster);
        cluster.restart_immediately();
        let _ = held.end("ROLLBACK;"); // its session died with the server
        finished_exactly(&db, child, &format!("sync, {side} restarted"));
    }
    // verify, reading while the target stops and starts again.
    let held = Held::open(
        &db.target_url(),
        "BEGIN; LOCK TABLE retail.contracts IN ACCESS EXCLUSIVE MODE;",
    );
    let child = spawn_retrying(
        &db,
        &["verify", "--mapping", MAPPING],
        &source_url,
        &target_url,
    );
    wait_for_lock_wait(&db, tgt);
    tgt.restart_immediately();
    let _ = held.end("ROLLBACK;");
    finished_exactly(&db, child, "verify, target restarted");
}

#[test]
fn a_usage_error_or_a_finding_is_never_retried() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    // A non-empty target without a cutover record: a usage error, at once.
    db.target_sql("INSERT INTO retail.supply_points VALUES ('x', 'a', '100-0001', 'low', 'tokyo')");
    let started = std::time::Instant::now();
    let run = Run::from(
        spawn_retrying(
            &db,
            &["cutover", "--mapping", MAPPING],
            &db.source_url(),
            &db.target_url(),
        )
        .wait_with_output()
        .unwrap(),
    );
    run.expect_code(2);
    assert!(!run.stderr.contains(RETRIED), "{}", run.stderr);
    db.target_sql("DELETE FROM retail.supply_points");
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    // A difference verify finds is its answer, not a failure.
    db.target_sql("UPDATE retail.contracts SET phone_number = '000' WHERE contract_id = (SELECT min(contract_id) FROM retail.contracts)");
    let run = Run::from(
        spawn_retrying(
            &db,
            &["verify", "--mapping", MAPPING],
            &db.source_url(),
            &db.target_url(),
        )
        .wait_with_output()
        .unwrap(),
    );
    run.expect_code(3);
    assert!(!run.stderr.contains(RETRIED), "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

//! `sync --dry-run`: what a sync would write, with sample keys, and nothing written at
//! all; the writer lock is still taken.

use crate::support::held::Held;
use crate::support::{reference_data, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// Everything a sync could write in the target, as text.
fn target_state(db: &TestDb) -> String {
    db.target_sql(
        "SELECT (SELECT md5(string_agg(c::text, '' ORDER BY contract_id)) FROM retail.contracts c) || ' ' || \
                (SELECT md5(string_agg(b::text, '' ORDER BY target_table, batch_no)) FROM shadan.batches b) || ' ' || \
                (SELECT count(*) FROM shadan.runs)",
    )
}

#[test]
fn a_dry_run_reports_what_sync_then_does_and_writes_nothing() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 2000);
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    let moved = db.source_sql(
        "SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' \
         ORDER BY contract_id LIMIT 1",
    );
    db.source_sql(&format!(
        "UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id = {moved}; \
         UPDATE joint.contracts SET phone = '090-0000-0000' WHERE contract_id = \
             (SELECT max(contract_id) FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail')"
    ));
    let before = target_state(&db);
    let dry = db.shadan(&["sync", "--mapping", MAPPING, "--dry-run", "--json"]);
    dry.expect_code(0);
    assert_eq!(target_state(&db), before, "the dry run wrote something");
    let report = dry.json();
    let contracts = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "retail.contracts")
        .unwrap();
    assert_eq!(
        contracts["sample_keys"]["deleted"],
        serde_json::json!([format!("[{moved}]")])
    );
    // The real sync does exactly what the dry run said.
    let real = db.shadan(&["sync", "--mapping", MAPPING, "--json"]);
    real.expect_code(0);
    for (dry_table, real_table) in report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .zip(real.json()["tables"].as_array().unwrap())
    {
        assert_eq!(
            dry_table["changes"], real_table["changes"],
            "{}",
            dry.stdout
        );
    }
    let text = db.shadan(&["sync", "--mapping", MAPPING, "--dry-run"]);
    text.expect_code(0);
    assert!(
        text.stdout.contains("nothing was written"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_dry_run_on_a_fresh_target_creates_no_state_and_respects_the_lock() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    let dry = db.shadan(&["sync", "--mapping", MAPPING, "--dry-run", "--json"]);
    dry.expect_code(0);
    assert_eq!(
        db.target_sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'shadan'"),
        "0"
    );
    assert!(
        dry.json()["tables"][0]["changes"]["inserted"]
            .as_u64()
            .unwrap()
            > 0
    );
    // An unfinished cutover: sync would refuse, and so does its dry run.
    db.cutover_killed_after(1, &["--batch-rows", "20", "--jobs", "1"]);
    if db.target_sql("SELECT count(*) FROM shadan.deferred_indexes") != "0" {
        db.shadan(&["sync", "--mapping", MAPPING, "--dry-run"])
            .expect_stderr(2, "has not finished");
    }
    let lock = Held::open(&db.target_url(), "SELECT pg_advisory_lock(21320, 1);");
    let run = db.shadan(&["sync", "--mapping", MAPPING, "--dry-run"]);
    run.expect_stderr(1, "another shadan");
    assert!(lock.end("SELECT 1;"));
}

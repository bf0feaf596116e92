//! `shadan history`: past runs from the target alone, and a chain of manifests that shows
//! a deleted or edited run.

use crate::support::{reference_data, Run, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// Runs `history` with only the target given (the source is not needed).
fn history(db: &TestDb, args: &[&str]) -> Run {
    let mut all = vec!["history"];
    all.extend_from_slice(args);
    let out = db
        .command(&all)
        .env_remove("SHADAN_SOURCE")
        .output()
        .unwrap();
    Run::from(out)
}

fn three_runs() -> TestDb {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 500);
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    db.source_sql("UPDATE joint.contracts SET phone = '090-1111-2222' WHERE contract_id = (SELECT min(contract_id) FROM joint.contracts)");
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
    db
}

#[test]
fn history_lists_runs_from_the_target_alone_and_their_chain_is_intact() {
    let db = three_runs();
    let run = history(&db, &["--json", "--check"]);
    run.expect_code(0);
    let report = run.json();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["command"], "sync");
    assert_eq!(runs[2]["command"], "cutover");
    assert_eq!(runs[2]["status"], "done");
    assert!(runs[2]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["target"] == "retail.contracts"));
    assert_eq!(report["chain"]["intact"], true);
    let text = history(&db, &["--check", "--limit", "2"]);
    text.expect_code(0);
    assert!(text.stdout.contains("chain intact"), "{}", text.stdout);
    assert_eq!(
        text.stdout
            .lines()
            .filter(|l| l.starts_with("run "))
            .count(),
        2
    );
}

#[test]
fn a_deleted_or_edited_run_breaks_the_chain() {
    let db = three_runs();
    db.target_sql(
        "DELETE FROM shadan.runs WHERE run_id = (SELECT min(run_id) + 1 FROM shadan.runs)",
    );
    let run = history(&db, &["--check"]);
    run.expect_code(3);
    assert!(
        run.stdout.contains("BROKEN") && run.stdout.contains("deleted or edited"),
        "{}",
        run.stdout
    );

    // Every digest removed: the manifests still name their predecessors.
    let db = three_runs();
    db.target_sql("UPDATE shadan.runs SET manifest_blake3 = NULL");
    history(&db, &["--check"]).expect_code(3);
    // A column edited outside the chain is not what history shows.
    db.target_sql("UPDATE shadan.runs SET status = 'forged', command = 'forged'");
    let listed = history(&db, &["--json"]);
    assert!(!listed.stdout.contains("forged"), "{}", listed.stdout);

    let db = three_runs();
    db.target_sql(
        "UPDATE shadan.runs SET manifest = jsonb_set(manifest, '{tool_version}', '\"9.9.9\"') \
         WHERE run_id = (SELECT min(run_id) FROM shadan.runs)",
    );
    let run = history(&db, &["--check"]);
    run.expect_code(3);
    assert!(run.stdout.contains("was edited"), "{}", run.stdout);
}

#[test]
fn a_run_row_outside_the_chain_is_a_break_and_never_a_success() {
    let db = three_runs();
    // A run a retail user forged: finished, with no manifest.
    let forged = db.target_sql(
        "INSERT INTO shadan.runs (command, mapping_name, mapping_blake3, tool_version, status, finished_at) \
         VALUES ('sync', 'retail-split', 'x', '0.1.0', 'done', now()) RETURNING run_id",
    );
    let forged: i64 = forged.lines().next().unwrap().parse().unwrap();
    let run = history(&db, &["--check"]);
    run.expect_code(3);
    assert!(
        run.stdout.contains(&format!("BROKEN: run {forged}:"))
            && run.stdout.contains("no manifest"),
        "{}",
        run.stdout
    );
    let listed = history(&db, &["--json"]).json();
    let row = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == forged)
        .unwrap()
        .clone();
    assert_ne!(row["status"], "done", "{row}");

    // A killed run (no manifest, still 'running') is no break, and has no end to show
    // even when a column beside it claims one.
    db.target_sql(&format!("DELETE FROM shadan.runs WHERE run_id = {forged}"));
    db.target_sql(
        "INSERT INTO shadan.runs (command, mapping_name, mapping_blake3, tool_version, finished_at) \
         VALUES ('sync', 'retail-split', 'x', '0.1.0', now())",
    );
    history(&db, &["--check"]).expect_code(0);
    let listed = history(&db, &["--json"]).json();
    let killed = &listed["runs"][0];
    assert_eq!(killed["status"], "running", "{killed}");
    assert!(killed["finished_at"].is_null(), "{killed}");

    // A finished run whose status column was edited to a success.
    let db = three_runs();
    db.target_sql(
        "UPDATE shadan.runs SET status = 'failed' WHERE run_id = (SELECT min(run_id) FROM shadan.runs)",
    );
    let run = history(&db, &["--check"]);
    run.expect_code(3);
    assert!(
        run.stdout.contains("not the one its manifest records"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_verify_report_names_what_it_checked_against() {
    let db = three_runs();
    let head = history(&db, &["--json", "--check"]).json()["chain"]["head"].clone();
    let run = db.shadan(&["verify", "--mapping", MAPPING, "--json"]);
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["chain_head"], head);
    assert_eq!(report["tool_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["mapping_blake3"].as_str().unwrap().len(), 64);
    assert_eq!(report["servers"]["source"]["database"], db.name);
    assert_eq!(report["servers"]["target"]["role"], "postgres");
    assert!(report["servers"]["source"]["system_identifier"].is_string());
    assert!(report["verified_at"].is_string());
    assert!(!run.stdout.to_lowercase().contains("password"));
}

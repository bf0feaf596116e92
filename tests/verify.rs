//! `shadan verify`: each planted fault is found, and only it; the exit code follows the
//! contract (0 verified, 3 differences, 4 leak), and no planted secret value ever
//! appears in the output.

use serde_json::Value;

use crate::support::{reference_data, reference_mapping, s, write_mapping, Run, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// The reference schema with `n` rows, copied by cutover.
fn copied(n: usize) -> TestDb {
    let db = TestDb::with_reference_schema();
    reference_data(&db, n);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "700"])
        .expect_code(0);
    db
}

fn verify(db: &TestDb, mapping: &str, extra: &[&str]) -> Run {
    let mut args = vec!["verify", "--mapping", mapping, "--json"];
    args.extend_from_slice(extra);
    db.shadan(&args)
}

fn table<'a>(report: &'a Value, target: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap()
}

fn counts(t: &Value) -> (u64, u64, u64) {
    (
        t["missing"].as_u64().unwrap(),
        t["extra"].as_u64().unwrap(),
        t["changed"].as_u64().unwrap(),
    )
}

fn leak_kinds(report: &Value) -> Vec<(String, String, Option<String>, u64)> {
    report["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                l["table"].as_str().unwrap().to_string(),
                l["column"].as_str().map(String::from),
                l["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn assert_absent(run: &Run, secret: &str) {
    assert!(secret.len() >= 6, "a real secret to look for");
    assert!(
        !run.all_output().contains(secret),
        "the planted secret value appears in the output"
    );
}

#[test]
fn a_clean_copy_verifies_and_its_row_counts_equal_the_manifest() {
    let db = copied(4000);
    let manifest: serde_json::Value = serde_json::from_str(&db.target_sql(
        "SELECT manifest::text FROM shadan.runs WHERE status = 'done' ORDER BY run_id DESC LIMIT 1",
    ))
    .unwrap();
    let run = verify(&db, MAPPING, &["--deep"]);
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["verified"], true);
    assert_eq!(
        report["leaks"],
        serde_json::json!([]),
        "no false positives on realistic data"
    );
    for target in ["retail.supply_points", "retail.contracts"] {
        let t = table(&report, target);
        assert_eq!(counts(t), (0, 0, 0));
        assert_eq!(t["source_digest"], t["target_digest"]);
        // Each run draws its own key: digests planted rows were aimed at do not recur.
        let again = verify(&db, MAPPING, &[]).json();
        assert_ne!(
            table(&again, target)["target_digest"],
            t["target_digest"],
            "verify's digests are keyed per run"
        );
        assert_eq!(t["source_rows"], t["target_rows"]);
        // verify's digests are its own (keyed per run); what the last run recorded that
        // it can check is each table's row count.
        let recorded = manifest["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["target"] == target)
            .unwrap_or_else(|| panic!("{target} is not in the manifest: {manifest}"));
        assert_eq!(recorded["rows"], t["target_rows"], "{target}");
        assert!(t["target_rows"].as_u64().unwrap() > 0);
    }
    let text = db.shadan(&["verify", "--mapping", MAPPING]);
    text.expect_code(0);
    assert!(text.stdout.contains("VERIFIED"), "{}", text.stdout);
}

#[test]
fn a_deleted_target_row_is_missing_and_nothing_else() {
    let db = copied(3000);
    let id = db.target_sql(
        "SELECT contract_id FROM retail.contracts ORDER BY contract_id OFFSET 100 LIMIT 1",
    );
    db.target_sql(&format!(
        "DELETE FROM retail.contracts WHERE contract_id = {id}"
    ));
    let run = verify(&db, MAPPING, &[]);
    run.expect_code(3);
    let report = run.json();
    assert_eq!(report["verified"], false);
    let t = table(&report, "retail.contracts");
    assert_eq!(counts(t), (1, 0, 0));
    assert_eq!(t["sample_keys"], serde_json::json!([format!("[{id}]")]));
    assert_eq!(counts(table(&report, "retail.supply_points")), (0, 0, 0));
    assert_eq!(report["leaks"], serde_json::json!([]));
}

#[test]
fn an_inserted_row_inside_the_scope_is_extra_and_not_a_leak() {
    let db = copied(3000);
    db.target_sql("INSERT INTO retail.contracts (contract_id, supply_point_id, night_equipment, start_date) VALUES (9000001, '0300000000000000000001', false, '2026-01-01')");
    let run = verify(&db, MAPPING, &[]);
    run.expect_code(3);
    let report = run.json();
    let t = table(&report, "retail.contracts");
    assert_eq!(counts(t), (0, 1, 0));
    assert_eq!(t["sample_keys"], serde_json::json!(["[9000001]"]));
    assert_eq!(report["leaks"], serde_json::json!([]));
}

#[test]
fn one_changed_value_is_changed() {
    let db = copied(3000);
    db.target_sql("UPDATE retail.supply_points SET address = address || ' 2F' WHERE supply_point_id = '0300000000000000000007'");
    let run = verify(&db, MAPPING, &[]);
    run.expect_code(3);
    let report = run.json();
    let t = table(&report, "retail.supply_points");
    assert_eq!(counts(t), (0, 0, 1));
    assert_eq!(
        t["sample_keys"],
        serde_json::json!([r#"["0300000000000000000007"]"#])
    );
    assert_ne!(t["source_digest"], t["target_digest"]);
    assert_eq!(counts(table(&report, "retail.contracts")), (0, 0, 0));
}

#[test]
fn another_retailers_contract_in_the_target_is_an_out_of_scope_leak() {
    let db = copied(3000);
    for (kind, filter) in [
        (
            "other retailer",
            "retailer_code <> 'R0001' AND supply_kind = 'retail'",
        ),
        ("FIT purchase", "supply_kind = 'fit_purchase'"),
    ] {
        let row = db.source_sql(&format!(
            "SELECT contract_id || '|' || phone FROM joint.contracts WHERE {filter} AND phone IS NOT NULL ORDER BY contract_id LIMIT 1"
        ));
        let (id, phone) = row.split_once('|').unwrap();
        db.target_sql(&format!(
            "INSERT INTO retail.contracts (contract_id, supply_point_id, phone_number, night_equipment, start_date) \
             VALUES ({id}, '0300000000000000000001', '{phone}', false, '2020-01-01')"
        ));
        let run = verify(&db, MAPPING, &[]);
        run.expect_code(4);
        let report = run.json();
        assert_eq!(
            leak_kinds(&report),
            [(
                "out_of_scope".to_string(),
                "retail.contracts".to_string(),
                None,
                1
            )],
            "{kind}"
        );
        assert_eq!(
            report["leaks"][0]["sample_keys"],
            serde_json::json!([format!("[{id}]")])
        );
        assert_absent(&run, phone);
        db.target_sql(&format!(
            "DELETE FROM retail.contracts WHERE contract_id = {id}"
        ));
    }
}

#[test]
fn a_value_in_a_row_not_owned_is_an_own_value_leak() {
    // A scope-"all" variant: every retail contract crosses, own columns only where owned.
    let db = TestDb::with_reference_schema();
    reference_data(&db, 3000);
    db.target_sql("ALTER TABLE retail.contracts ALTER COLUMN night_equipment DROP NOT NULL, ALTER COLUMN start_date DROP NOT NULL");
    let mapping = reference_mapping().replace("scope = \"own\"", "scope = \"all\"");
    let path = write_mapping(&db, &mapping);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    let row = db.source_sql(
        "SELECT contract_id || '|' || phone FROM joint.contracts WHERE retailer_code = 'R0002' AND supply_kind = 'retail' \
         AND phone IS NOT NULL ORDER BY contract_id LIMIT 1",
    );
    let (id, phone) = row.split_once('|').unwrap();
    assert_eq!(
        db.target_sql(&format!(
            "SELECT phone_number IS NULL FROM retail.contracts WHERE contract_id = {id}"
        )),
        "t"
    );
    db.target_sql(&format!(
        "UPDATE retail.contracts SET phone_number = '{phone}' WHERE contract_id = {id}"
    ));
    let run = verify(&db, s(&path), &[]);
    run.expect_code(4);
    let report = run.json();
    assert_eq!(
        leak_kinds(&report),
        [(
            "own_value".to_string(),
            "retail.contracts".to_string(),
            Some("phone_number".to_string()),
            1
        )]
    );
    assert_eq!(
        report["leaks"][0]["sample_keys"],
        serde_json::json!([format!("[{id}]")])
    );
    assert_eq!(counts(table(&report, "retail.contracts")), (0, 0, 1));
    assert_absent(&run, phone);
}

#[test]
fn a_column_filled_with_wheeling_numbers_is_a_column_leak_and_deep_finds_the_values() {
    let db = copied(3000);
    db.target_sql("ALTER TABLE retail.contracts ADD COLUMN notes text");
    let numbers = db.source_sql(
        "SELECT string_agg(contract_id || '=' || wheeling_contract_no, ',') FROM \
         (SELECT * FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' ORDER BY contract_id LIMIT 3) c",
    );
    let mut planted = Vec::new();
    for (i, pair) in numbers.split(',').enumerate() {
        let (id, wheeling) = pair.split_once('=').unwrap();
        // Whole value, inside a sentence, and behind punctuation.
        let note = [
            wheeling.to_string(),
            format!("customer called about {wheeling} today"),
            format!("ref:{wheeling};"),
        ][i]
            .clone();
        db.target_sql(&format!(
            "UPDATE retail.contracts SET notes = '{note}' WHERE contract_id = {id}"
        ));
        planted.push(wheeling.to_string());
    }
    let run = verify(&db, MAPPING, &[]);
    run.expect_code(4);
    let report = run.json();
    assert_eq!(
        leak_kinds(&report),
        [(
            "column".to_string(),
            "retail.contracts".to_string(),
            Some("notes".to_string()),
            1
        )]
    );
    assert_eq!(
        counts(table(&report, "retail.contracts")),
        (0, 0, 0),
        "mapped columns are still equal"
    );

    let deep = verify(&db, MAPPING, &["--deep"]);
    deep.expect_code(4);
    let report = deep.json();
    let kinds = leak_kinds(&report);
    assert!(kinds.contains(&(
        "column".into(),
        "retail.contracts".into(),
        Some("notes".into()),
        1
    )));
    assert!(
        kinds.contains(&(
            "value".into(),
            "retail.contracts".into(),
            Some("notes".into()),
            3
        )),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    for secret in &planted {
        assert_absent(&run, secret);
        assert_absent(&deep, secret);
    }
    let text = db.shadan(&["verify", "--mapping", MAPPING, "--deep"]);
    text.expect_code(4);
    assert!(
        text.stdout.contains("LEAK value") && text.stdout.contains("retail.contracts.notes"),
        "{}",
        text.stdout
    );
    for secret in &planted {
        assert_absent(&text, secret);
    }
}

#[test]
fn another_retailers_phone_in_an_own_customers_cell_is_found_by_deep() {
    let db = copied(3000);
    let phone = db.source_sql(
        "SELECT phone FROM joint.contracts WHERE retailer_code <> 'R0001' AND phone IS NOT NULL AND phone NOT IN \
         (SELECT phone FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' AND phone IS NOT NULL) \
         ORDER BY contract_id LIMIT 1",
    );
    let id = db.target_sql(
        "SELECT contract_id FROM retail.contracts WHERE phone_number IS NULL ORDER BY 1 LIMIT 1",
    );
    db.target_sql(&format!(
        "UPDATE retail.contracts SET phone_number = '{phone}' WHERE contract_id = {id}"
    ));
    let plain = verify(&db, MAPPING, &[]);
    plain.expect_code(3);
    assert_eq!(counts(table(&plain.json(), "retail.contracts")), (0, 0, 1));
    let deep = verify(&db, MAPPING, &["--deep"]);
    deep.expect_code(4);
    assert_eq!(
        leak_kinds(&deep.json()),
        [(
            "value".to_string(),
            "retail.contracts".to_string(),
            Some("phone_number".to_string()),
            1
        )]
    );
    assert_absent(&plain, &phone);
    assert_absent(&deep, &phone);
}

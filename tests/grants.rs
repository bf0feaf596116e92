//! `shadan grants`: the generated SQL, applied by a DBA on a real source cluster, lets the
//! tool do its work as that role and nothing more: non-public columns cannot be read, and
//! with export views not even the owner column.

use crate::support::{reference_data, reference_mapping, s, write_mapping, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// Generates the grants script, applies it twice (it must be idempotent).
fn apply_grants(db: &TestDb, mapping: &str, role: &str, views: bool) {
    let mut args = vec!["grants", "--mapping", mapping, "--role", role];
    if views {
        args.push("--views");
    }
    let run = db.shadan(&args);
    run.expect_code(0);
    // No password is ever set by the script: the only PASSWORD is a commented example.
    for line in run.stdout.lines() {
        if line.to_lowercase().contains("password '") {
            assert!(
                line.trim_start().starts_with("--") && line.contains("'<fill in>'"),
                "the script sets a password: {line}"
            );
        }
    }
    for _ in 0..2 {
        db.source_sql(&run.stdout);
    }
}

/// Runs shadan with the source reached as `role`.
fn shadan_as(db: &TestDb, role: &str, args: &[&str]) -> crate::support::Run {
    let out = db
        .command(args)
        .env("SHADAN_SOURCE", db.source_url_as(role))
        .output()
        .unwrap();
    crate::support::Run::from(out)
}

#[test]
fn the_granted_role_can_run_everything_but_cannot_read_non_public_columns() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 1500);
    let role = format!("reader_{}", db.name);
    apply_grants(&db, MAPPING, &role, false);

    for args in [
        vec!["plan", "--mapping", MAPPING],
        vec!["cutover", "--mapping", MAPPING],
    ] {
        shadan_as(&db, &role, &args).expect_code(0);
    }
    db.assert_reference_copy_exact();
    db.source_sql("UPDATE joint.contracts SET retailer_code = 'R0004' WHERE contract_id IN (SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' ORDER BY 1 LIMIT 5)");
    shadan_as(&db, &role, &["sync", "--mapping", MAPPING]).expect_code(0);
    shadan_as(&db, &role, &["verify", "--mapping", MAPPING]).expect_code(0);
    db.assert_reference_copy_exact();

    let denied = db
        .source_sql_as(
            &role,
            "SELECT wheeling_contract_no FROM joint.contracts LIMIT 1",
        )
        .unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    for sql in [
        "SELECT meter_id FROM joint.supply_points LIMIT 1",
        "SELECT * FROM joint.retailers LIMIT 1",
        "SELECT * FROM joint.contracts LIMIT 1",
    ] {
        assert!(
            db.source_sql_as(&role, sql)
                .unwrap_err()
                .contains("permission denied"),
            "{sql}"
        );
    }
    assert!(db
        .source_sql_as(
            &role,
            "SELECT contract_id, retailer_code FROM joint.contracts LIMIT 1"
        )
        .is_ok());
    let writes = db.source_sql_as(&role, "UPDATE joint.contracts SET phone = NULL WHERE false");
    assert!(
        writes.unwrap_err().contains("permission denied"),
        "the role cannot write"
    );
}

#[test]
fn with_export_views_the_role_cannot_read_even_the_owner_column_and_the_copy_is_identical() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 1500);
    let role = format!("viewer_{}", db.name);
    let mapping = reference_mapping().replace(
        "own_retailer = \"R0001\"",
        "own_retailer = \"R0001\"\nsource_access = \"views\"",
    );
    let path = write_mapping(&db, &mapping);

    let before = shadan_as(&db, "postgres", &["plan", "--mapping", s(&path)]);
    before.expect_code(2);
    assert!(
        before
            .stderr
            .contains("export view \"shadan_export\".\"joint.contracts\" does not exist"),
        "{}",
        before.stderr
    );

    apply_grants(&db, s(&path), &role, true);
    let plan = shadan_as(&db, &role, &["plan", "--mapping", s(&path), "--json"]);
    plan.expect_code(0);
    let query = plan.json()["tables"][1]["query"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        query.contains("FROM \"shadan_export\".\"joint.contracts\"")
            && !query.contains("retailer_code"),
        "{query}"
    );

    shadan_as(&db, &role, &["cutover", "--mapping", s(&path)]).expect_code(0);
    db.assert_reference_copy_exact();
    db.source_sql("UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id IN (SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0006' AND supply_kind = 'retail' ORDER BY 1 LIMIT 5)");
    shadan_as(&db, &role, &["sync", "--mapping", s(&path)]).expect_code(0);
    shadan_as(&db, &role, &["verify", "--mapping", s(&path)]).expect_code(0);
    db.assert_reference_copy_exact();

    for sql in [
        "SELECT retailer_code FROM joint.contracts LIMIT 1",
        "SELECT contract_id FROM joint.contracts LIMIT 1",
    ] {
        assert!(
            db.source_sql_as(&role, sql)
                .unwrap_err()
                .contains("permission denied"),
            "{sql}"
        );
    }
    assert!(db
        .source_sql_as(
            &role,
            "SELECT count(*) FROM shadan_export.\"joint.contracts\""
        )
        .is_ok());

    // A view made for another projection is refused.
    let other = write_mapping(
        &db,
        &mapping.replace("own_retailer = \"R0001\"", "own_retailer = \"R0002\""),
    );
    let stale = shadan_as(&db, &role, &["plan", "--mapping", s(&other)]);
    stale.expect_stderr(2, "computes a different projection");
}

#[test]
fn verify_reports_a_column_granted_to_the_reader_later() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    let role = format!("audited_{}", db.name);
    apply_grants(&db, MAPPING, &role, false);
    shadan_as(&db, &role, &["cutover", "--mapping", MAPPING]).expect_code(0);
    let clean = shadan_as(&db, &role, &["verify", "--mapping", MAPPING, "--json"]);
    clean.expect_code(0);
    assert_eq!(clean.json()["excess_privileges"], serde_json::json!([]));
    // Years later a DBA grants the reader one non-public column.
    db.source_sql(&format!(
        "GRANT SELECT (wheeling_contract_no) ON joint.contracts TO {role}"
    ));
    let run = shadan_as(&db, &role, &["verify", "--mapping", MAPPING, "--json"]);
    run.expect_code(0);
    let found = run.json()["excess_privileges"].clone();
    assert_eq!(found[0]["table"], "joint.contracts", "{found}");
    assert_eq!(found[0]["column"], "wheeling_contract_no");
    assert_eq!(found[0]["role"], role.as_str());
    let text = shadan_as(&db, &role, &["verify", "--mapping", MAPPING]);
    assert!(text.stdout.contains("PRIVILEGE role"), "{}", text.stdout);
}

//! `shadan init`: a mapping skeleton from the catalog that crosses nothing until it is
//! classified, and retail DDL that `plan` then accepts, round trip against real clusters.

use crate::support::{reference_data, s, write_mapping, TestDb};

#[test]
fn init_classify_target_ddl_and_plan_round_trip() {
    let db = TestDb::new();
    db.source_sql(
        &std::fs::read_to_string(crate::support::repo().join("schema/joint.sql")).unwrap(),
    );
    db.source_sql(
        "COMMENT ON COLUMN joint.contracts.holder_name IS '契約名義'; \
         CREATE TABLE joint.audit_log (at timestamptz, what text)",
    );
    reference_data(&db, 500);
    let run = db.shadan(&["init", "--schema", "joint"]);
    run.expect_code(0);
    let skeleton = run.stdout.clone();
    assert!(skeleton.contains("# text; 契約名義"), "{skeleton}");
    assert!(
        skeleton.contains("joint.audit_log: not mapped: no primary key"),
        "{skeleton}"
    );
    assert!(
        !skeleton.contains("= \"public\"   #") && !skeleton.contains("= \"own\"   #"),
        "a column not classified non_public"
    );

    // As written, nothing may cross: plan refuses it, naming every table the retail side
    // lacks (the skeleton classifies every column non_public besides).
    let path = write_mapping(&db, &skeleton);
    let refused = db.shadan(&["plan", "--mapping", s(&path)]);
    refused.expect_code(2);
    for table in ["joint.contracts", "joint.supply_points"] {
        assert!(
            refused
                .stderr
                .contains(&format!("{table}: target table not found")),
            "{}",
            refused.stderr
        );
    }

    // Only two tables, classified the way a reviewer would.
    let run = db.shadan(&["init", "--table", "joint.contracts", "--table", "supply_p*"]);
    run.expect_code(0);
    let mut classified = String::new();
    let mut scope_done = false;
    for line in run.stdout.lines() {
        let line = if line.contains(", key") {
            line.replace("\"non_public\"", "\"public\"")
        } else if ["holder_name ", "phone ", "start_date ", "night_equipment "]
            .iter()
            .any(|c| line.starts_with(c))
        {
            line.replace("\"non_public\"", "\"own\"")
        } else if ["address ", "postal_code ", "voltage_class ", "area "]
            .iter()
            .any(|c| line.starts_with(c))
        {
            line.replace("\"non_public\"", "\"public\"")
        } else if line.starts_with("scope = ") && !scope_done {
            scope_done = true; // contracts come first
            "scope = \"own\"\nowner = \"retailer_code\"\nonly = { supply_kind = [\"retail\"] }"
                .to_string()
        } else {
            line.replace("own_retailer = \"CHANGE-ME\"", "own_retailer = \"R0001\"")
                .replace("target = \"joint.", "target = \"retail.")
        };
        classified.push_str(&line);
        classified.push('\n');
    }
    let path = write_mapping(&db, &classified);
    let ddl = db.shadan(&["init", "--target-ddl", "--mapping", s(&path)]);
    ddl.expect_code(0);
    assert!(
        ddl.stdout.contains("CREATE TABLE \"retail\".\"contracts\""),
        "{}",
        ddl.stdout
    );
    assert!(
        !ddl.stdout.contains("wheeling"),
        "a non_public column in the DDL"
    );
    db.target_sql(&ddl.stdout);
    db.shadan(&["plan", "--mapping", s(&path)]).expect_code(0);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    db.shadan(&["verify", "--mapping", s(&path), "--deep"])
        .expect_code(0);
    assert_eq!(
        db.target_sql("SELECT count(*) FROM retail.contracts"),
        db.source_sql("SELECT count(*) FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail'")
    );
}

#[test]
fn target_ddl_refuses_a_mapping_the_source_does_not_fit() {
    let db = TestDb::with_reference_schema();
    let text = crate::support::reference_mapping()
        .replace("source = \"joint.contracts\"", "source = \"joint.nothing\"");
    let path = write_mapping(&db, &text);
    let run = db.shadan(&["init", "--target-ddl", "--mapping", s(&path)]);
    run.expect_stderr(2, "joint.nothing");
}

#[test]
fn init_writes_valid_toml_whatever_the_names() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA \"we.ird\"; \
         CREATE TABLE \"we.ird\".\"t\"\"q\" (id int PRIMARY KEY, \"it's \"\"x\"\"\" text, \"a\nb\" text, \"c\\d\" text)",
    );
    let run = db.shadan(&["init"]);
    run.expect_code(0);
    let path = write_mapping(&db, &run.stdout);
    let plan = db.shadan(&["plan", "--mapping", s(&path)]);
    // The skeleton parses and names the table right; plan refuses it only for what is
    // still to do (here the retail table does not exist yet).
    plan.expect_code(2);
    assert!(
        plan.stderr.contains("target table not found") && !plan.stderr.contains("expected"),
        "{}\n{}",
        run.stdout,
        plan.stderr
    );
}

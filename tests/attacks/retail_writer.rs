//! A writer on the retail server who wants verify to pass, and state the tool did not
//! write: row-level security, a `shadan` schema of someone else's, forged key
//! definitions, keys that are NULL, and a layout save cut off halfway.

use crate::support::{reference_data, reference_mapping, s, through_export_views, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// The reference schema with data, copied.
fn copied(n: usize) -> TestDb {
    let db = TestDb::with_reference_schema();
    reference_data(&db, n);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "500"])
        .expect_code(0);
    db
}

#[test]
fn a_row_hidden_by_row_level_security_fails_verify_loudly() {
    let db = copied(1000);
    let tool = format!("tool_{}", db.name);
    db.target_sql(&format!(
        "CREATE ROLE {tool} LOGIN; GRANT ALL ON SCHEMA retail, shadan TO {tool}; \
         GRANT ALL ON ALL TABLES IN SCHEMA retail, shadan TO {tool}; \
         ALTER TABLE retail.contracts OWNER TO {tool}; \
         CREATE TEMP TABLE planted AS SELECT * FROM retail.contracts LIMIT 1; \
         UPDATE planted SET contract_id = contract_id + 9000000; \
         INSERT INTO retail.contracts SELECT * FROM planted; \
         ALTER TABLE retail.contracts ENABLE ROW LEVEL SECURITY; \
         ALTER TABLE retail.contracts FORCE ROW LEVEL SECURITY; \
         CREATE POLICY hide ON retail.contracts USING (contract_id < 9000000)"
    ));
    let run = db.shadan_as(None, Some(&tool), &["verify", "--mapping", MAPPING]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("row-level security") && run.stderr.contains("contracts"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("BYPASSRLS"), "{}", run.stderr);
    assert!(!run.stdout.contains("VERIFIED"), "{}", run.stdout);
}

#[test]
fn a_source_table_filtered_by_row_level_security_stops_the_copy() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 500);
    let reader = format!("rls_reader_{}", db.name);
    db.source_sql(&format!(
        "CREATE ROLE {reader} LOGIN; GRANT USAGE ON SCHEMA joint TO {reader}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA joint TO {reader}; \
         ALTER TABLE joint.contracts ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY evens ON joint.contracts TO {reader} USING (contract_id % 2 = 0)"
    ));
    let run = db.shadan_as(Some(&reader), None, &["cutover", "--mapping", MAPPING]);
    run.expect_stderr(1, "row-level security");
    assert_eq!(db.target_sql("SELECT count(*) FROM retail.contracts"), "0");
}

#[test]
fn a_state_schema_owned_by_another_role_is_refused_and_its_sql_never_runs() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    let mallory = format!("mallory_{}", db.name);
    db.target_sql(&format!(
        "CREATE ROLE {mallory} LOGIN; CREATE SCHEMA shadan AUTHORIZATION {mallory}; SET ROLE {mallory}; \
         CREATE TABLE shadan.deferred_indexes (target_table text NOT NULL, position int NOT NULL, \
             create_sql text NOT NULL, unique_columns text[], PRIMARY KEY (target_table, position)); \
         INSERT INTO shadan.deferred_indexes VALUES ('retail.contracts', 0, 'ALTER ROLE {mallory} SUPERUSER', NULL)"
    ));
    for args in [
        &["cutover", "--mapping", MAPPING][..],
        &["cutover", "--mapping", MAPPING, "--resume"][..],
        &["sync", "--mapping", MAPPING][..],
    ] {
        let run = db.shadan(args);
        run.expect_stderr(1, "state schema");
    }
    assert_eq!(
        db.target_sql(&format!(
            "SELECT rolsuper FROM pg_roles WHERE rolname = '{mallory}'"
        )),
        "f"
    );
    assert_eq!(db.target_sql("SELECT count(*) FROM retail.contracts"), "0");
}

#[test]
fn a_trigger_or_a_write_grant_on_the_tools_state_is_refused_and_no_code_of_another_role_runs() {
    // A careless `GRANT ALL ON ALL TABLES IN SCHEMA shadan` hands out TRIGGER: another
    // role's trigger on the tool's run records would then run as the tool.
    let db = copied(300);
    let mallory = format!("mallory_{}", db.name);
    db.target_sql(&format!(
        "CREATE ROLE {mallory} LOGIN; CREATE SCHEMA mal AUTHORIZATION {mallory}; \
         GRANT USAGE ON SCHEMA shadan TO {mallory}; \
         GRANT ALL ON ALL TABLES IN SCHEMA shadan TO {mallory}; \
         SET ROLE {mallory}; \
         CREATE TABLE mal.pwned (who text); GRANT ALL ON mal.pwned TO PUBLIC; \
         GRANT USAGE ON SCHEMA mal TO PUBLIC; \
         CREATE FUNCTION mal.trap() RETURNS trigger LANGUAGE plpgsql AS \
           $$BEGIN INSERT INTO mal.pwned VALUES (current_user); RETURN NEW; END$$; \
         CREATE TRIGGER t BEFORE INSERT OR UPDATE ON shadan.runs \
           FOR EACH ROW EXECUTE FUNCTION mal.trap(); RESET ROLE"
    ));
    db.source_sql("UPDATE joint.supply_points SET address = address || ' 2F' WHERE supply_point_id IN (SELECT supply_point_id FROM joint.supply_points LIMIT 5)");
    for args in [
        &["sync", "--mapping", MAPPING][..],
        &["sync", "--mapping", MAPPING, "--dry-run"][..],
        &["cutover", "--mapping", MAPPING, "--resume"][..],
        &["history", "--check"][..],
    ] {
        let run = db.shadan(args);
        run.expect_stderr(1, "trigger t on shadan.runs");
    }
    assert_eq!(db.target_sql("SELECT count(*) FROM mal.pwned"), "0");
    // The trigger gone, the grants of writes still refused.
    db.target_sql("DROP TRIGGER t ON shadan.runs");
    db.shadan(&["sync", "--mapping", MAPPING])
        .expect_stderr(1, &format!("INSERT on shadan.runs granted to {mallory}"));
    // One column is enough to forge a checkpoint.
    db.target_sql(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA shadan FROM {mallory}; \
         GRANT UPDATE (prints) ON shadan.batches TO {mallory}"
    ));
    db.shadan(&["sync", "--mapping", MAPPING]).expect_stderr(
        1,
        &format!("UPDATE on shadan.batches (prints) granted to {mallory}"),
    );
    db.target_sql(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA shadan FROM {mallory}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA shadan TO {mallory}"
    ));
    // A grant left on a dropped column allows nothing, and no REVOKE could clear it.
    db.target_sql(&format!(
        "ALTER TABLE shadan.runs ADD COLUMN note text; \
         GRANT UPDATE (note) ON shadan.runs TO {mallory}; \
         ALTER TABLE shadan.runs DROP COLUMN note"
    ));
    // Reading the state is no threat: an auditor may, and reads the writer's state.
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
    db.shadan_as(None, Some(&mallory), &["history", "--check"])
        .expect_code(0);
    assert_eq!(db.target_sql("SELECT count(*) FROM mal.pwned"), "0");
}

#[test]
fn verify_takes_no_key_definition_from_the_state_schema() {
    let db = copied(500);
    // The retail writer drops the key and forges a deferred one, then adds a duplicate.
    db.target_sql(
        "ALTER TABLE retail.contracts DROP CONSTRAINT contracts_pkey; \
         INSERT INTO shadan.deferred_indexes VALUES ('retail.contracts', 0, 'SELECT 1', '{contract_id}'); \
         INSERT INTO retail.contracts SELECT * FROM retail.contracts LIMIT 1",
    );
    let run = db.shadan(&["verify", "--mapping", MAPPING]);
    assert_ne!(
        run.code, 0,
        "verify signed off a table without a key: {}",
        run.stdout
    );
    assert!(run.stderr.contains("primary key"), "{}", run.stderr);
}

#[test]
fn a_null_key_in_the_target_is_an_extra_row_not_a_crash() {
    let db = copied(500);
    db.target_sql(
        "ALTER TABLE retail.contracts DROP CONSTRAINT contracts_pkey; \
         ALTER TABLE retail.contracts ALTER COLUMN contract_id DROP NOT NULL; \
         CREATE UNIQUE INDEX contracts_key ON retail.contracts (contract_id); \
         CREATE TEMP TABLE planted AS SELECT * FROM retail.contracts LIMIT 1; \
         UPDATE planted SET contract_id = NULL; \
         INSERT INTO retail.contracts SELECT * FROM planted",
    );
    let run = db.shadan(&["verify", "--mapping", MAPPING, "--json"]);
    run.expect_code(3);
    let report = run.json();
    let contracts = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "retail.contracts")
        .unwrap();
    assert_eq!(contracts["extra"], 1);
    assert_eq!(contracts["sample_keys"], serde_json::json!(["[null]"]));
}

#[test]
fn through_export_views_a_leak_still_exits_4_even_with_deep() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 2000);
    db.target_sql("ALTER TABLE retail.contracts ALTER COLUMN night_equipment DROP NOT NULL, ALTER COLUMN start_date DROP NOT NULL");
    let all = reference_mapping().replace("scope = \"own\"", "scope = \"all\"");
    let role = format!("viewer_{}", db.name);
    let views = through_export_views(&db, &all, &role);
    db.shadan_as(Some(&role), None, &["cutover", "--mapping", s(&views)])
        .expect_code(0);
    db.shadan_as(Some(&role), None, &["verify", "--mapping", s(&views)])
        .expect_code(0);
    let id = db.source_sql(
        "SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0002' \
         AND supply_kind = 'retail' ORDER BY contract_id LIMIT 1",
    );
    db.target_sql(&format!(
        "UPDATE retail.contracts SET phone_number = '090-9999-0000' WHERE contract_id = {id}"
    ));
    for extra in [&[][..], &["--deep"][..]] {
        let mut args = vec!["verify", "--mapping", s(&views), "--json"];
        args.extend_from_slice(extra);
        let run = db.shadan_as(Some(&role), None, &args);
        run.expect_code(4);
        assert_eq!(
            run.json()["leaks"][0]["kind"],
            "own_value",
            "{}",
            run.stdout
        );
    }
    // With nothing wrong, --deep through views says it could not run: exit 2, not 0.
    db.target_sql(&format!(
        "UPDATE retail.contracts SET phone_number = NULL WHERE contract_id = {id}"
    ));
    db.shadan_as(
        Some(&role),
        None,
        &["verify", "--mapping", s(&views), "--deep"],
    )
    .expect_code(2);
}

#[test]
fn a_layout_save_cut_off_halfway_leaves_no_partial_layout() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 3000);
    // The first sync lays out the (empty) target; make the save die after a few rows.
    db.target_sql(
        &std::fs::read_to_string(crate::support::repo().join("src/target/state.sql")).unwrap(),
    );
    db.target_sql(
        "CREATE FUNCTION public.cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF (SELECT count(*) FROM shadan.batches) >= 3 THEN RAISE EXCEPTION 'cut off'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER cut BEFORE INSERT ON shadan.batches FOR EACH ROW EXECUTE FUNCTION public.cut()",
    );
    db.shadan(&["sync", "--mapping", MAPPING, "--batch-rows", "200"])
        .expect_code(1);
    assert_eq!(
        db.target_sql("SELECT count(*) FROM shadan.batches"),
        "0",
        "a partial layout was kept"
    );
    db.target_sql("DROP TRIGGER cut ON shadan.batches");
    db.shadan(&["sync", "--mapping", MAPPING, "--batch-rows", "200"])
        .expect_code(0);
    db.assert_reference_copy_exact();
}

#[test]
fn a_leak_behind_a_target_schema_the_writer_broke_still_exits_4() {
    let db = copied(1000);
    // A row keyed as another retailer's contract, kept by the retail writer.
    let id = db.source_sql(
        "SELECT contract_id FROM joint.contracts WHERE retailer_code <> 'R0001' \
         AND supply_kind = 'retail' ORDER BY 1 LIMIT 1",
    );
    db.target_sql(&format!(
        "CREATE TEMP TABLE planted AS SELECT * FROM retail.contracts LIMIT 1; \
         UPDATE planted SET contract_id = {id}; INSERT INTO retail.contracts SELECT * FROM planted"
    ));
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(4);
    // The writer then drops the key of that table, retypes a column of another and drops
    // one of a third kind: verify reads around all of it and still reports the leak.
    db.target_sql(
        "ALTER TABLE retail.contracts DROP CONSTRAINT contracts_pkey; \
         ALTER TABLE retail.supply_points ALTER COLUMN area TYPE varchar(40); \
         ALTER TABLE retail.supply_points DROP COLUMN postal_code",
    );
    for extra in [&[][..], &["--deep"][..]] {
        let mut args = vec!["verify", "--mapping", MAPPING, "--json"];
        args.extend_from_slice(extra);
        let run = db.shadan(&args);
        run.expect_code(4);
        let report = run.json();
        assert!(
            report["leaks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["kind"] == "out_of_scope" && l["sample_keys"][0] == format!("[{id}]")),
            "{}",
            run.stdout
        );
        assert!(
            run.stderr.contains("target differs from the mapping"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn a_retyped_column_that_a_cast_would_cut_is_never_signed_off() {
    let db = copied(500);
    let secret = db.source_sql(
        "SELECT wheeling_contract_no FROM joint.contracts WHERE wheeling_contract_no IS NOT NULL ORDER BY 1 LIMIT 1",
    );
    // char(8) retyped to text: the cast back to char(8) would cut the secret away.
    db.target_sql(&format!(
        "ALTER TABLE retail.supply_points ALTER COLUMN postal_code TYPE text; \
         UPDATE retail.supply_points SET postal_code = postal_code || ' {secret}' \
         WHERE supply_point_id = (SELECT min(supply_point_id) FROM retail.supply_points)"
    ));
    let run = db.shadan(&["verify", "--mapping", MAPPING, "--deep", "--json"]);
    assert_ne!(
        run.code, 0,
        "a drifted target was signed off: {}",
        run.stdout
    );
    assert_eq!(run.json()["verified"], false);
    assert!(!run.all_output().contains(&secret));
}

//! Source views: ownership through a join (meter readings whose retailer is on the
//! contract in force that day), with the key checked as rows are read.

use crate::support::{reference_data, repo, s, write_mapping, TestDb};

const MAPPING: &str = "mappings/readings.toml";

/// The permitted readings, computed independently of the view and of shadan.
const EXPECTED: &str = "SELECT r.supply_point_id, r.read_on, r.kwh FROM joint.meter_readings r \
    JOIN joint.contracts c ON c.supply_point_id = r.supply_point_id AND r.read_on >= c.start_date \
        AND (c.end_date IS NULL OR r.read_on <= c.end_date) \
    WHERE c.retailer_code = 'R0001' AND c.supply_kind = 'retail' ORDER BY 1, 2";
const ACTUAL: &str = "SELECT supply_point_id, read_on, kwh FROM retail.readings ORDER BY 1, 2";

/// The reference schemas with readings: three per supply point that has one contract,
/// on days that contract is in force.
fn with_readings() -> TestDb {
    let db = TestDb::with_reference_schema();
    db.source_sql(&std::fs::read_to_string(repo().join("schema/readings.sql")).unwrap());
    db.target_sql(&std::fs::read_to_string(repo().join("schema/retail-readings.sql")).unwrap());
    reference_data(&db, 2000);
    db.source_sql(
        "INSERT INTO joint.meter_readings \
         SELECT c.supply_point_id, c.start_date + g, 100 + g, 'reader-' || c.contract_id FROM joint.contracts c \
         CROSS JOIN generate_series(0, 2) g \
         WHERE (SELECT count(*) FROM joint.contracts c2 WHERE c2.supply_point_id = c.supply_point_id) = 1 \
           AND (c.end_date IS NULL OR c.end_date >= c.start_date + 2)",
    );
    db
}

fn exact(db: &TestDb) {
    db.assert_same_rows(EXPECTED, ACTUAL, "readings");
    assert!(
        !db.source_rows(EXPECTED).is_empty(),
        "the test data has no permitted reading"
    );
}

#[test]
fn readings_owned_through_a_join_cross_exactly_and_follow_a_switch() {
    let db = with_readings();
    db.shadan(&["plan", "--mapping", MAPPING]).expect_code(0);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "500"])
        .expect_code(0);
    exact(&db);
    db.shadan(&["verify", "--mapping", MAPPING, "--deep"])
        .expect_code(0);
    // A customer switches away: their readings leave the retail copy that night.
    db.source_sql(
        "UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id IN \
         (SELECT c.contract_id FROM joint.contracts c JOIN joint.meter_readings r USING (supply_point_id) \
          WHERE c.retailer_code = 'R0001' AND c.supply_kind = 'retail' ORDER BY 1 LIMIT 3)",
    );
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
    exact(&db);
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn a_duplicate_key_in_the_view_stops_the_run_and_keeps_nothing_of_the_batch() {
    let db = with_readings();
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    let before = db.target_rows(ACTUAL);
    // A second, overlapping contract for a supply point with readings: the view now
    // lists each of its readings twice.
    db.source_sql(
        "INSERT INTO joint.contracts SELECT contract_id + 90000000, supply_point_id, holder_name, holder_name_kana, \
             phone, contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, \
             retailer_code, supply_kind, wheeling_contract_no, wheeling_rate_plan, start_date, end_date, updated_at \
         FROM joint.contracts WHERE supply_point_id = (SELECT min(supply_point_id) FROM joint.meter_readings) \
         LIMIT 1; \
         UPDATE joint.meter_readings SET kwh = kwh + 1",
    );
    let run = db.shadan(&["sync", "--mapping", MAPPING]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("joint.readings_by_retailer") && run.stderr.contains("not unique"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.target_rows(ACTUAL),
        before,
        "a half-written batch stayed"
    );
    // The same in a fresh cutover.
    db.target_sql("TRUNCATE retail.readings; DROP SCHEMA shadan CASCADE");
    let run = db.shadan(&["cutover", "--mapping", MAPPING]);
    run.expect_stderr(1, "not unique");
}

#[test]
fn a_column_added_to_the_view_stops_every_command_until_it_is_classified() {
    let db = with_readings();
    db.source_sql(
        "CREATE OR REPLACE VIEW joint.readings_by_retailer AS \
         SELECT r.supply_point_id, r.read_on, r.kwh, r.meter_reader, c.retailer_code, c.supply_kind, c.phone \
         FROM joint.meter_readings r JOIN joint.contracts c ON c.supply_point_id = r.supply_point_id \
          AND r.read_on >= c.start_date AND (c.end_date IS NULL OR r.read_on <= c.end_date)",
    );
    let run = db.shadan(&["cutover", "--mapping", MAPPING]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("phone") && run.stderr.contains("not classified"),
        "{}",
        run.stderr
    );
    // Classified, and the role the grants script makes can read exactly the view's
    // mapped columns.
    let text = std::fs::read_to_string(repo().join(MAPPING))
        .unwrap()
        .replace(
            "supply_kind     = \"non_public\"",
            "supply_kind     = \"non_public\"\nphone = \"non_public\"",
        );
    let path = write_mapping(&db, &text);
    let role = format!("viewreader_{}", db.name);
    let script = db.shadan(&["grants", "--mapping", s(&path), "--role", &role]);
    script.expect_code(0);
    db.source_sql(&script.stdout);
    db.shadan_as(Some(&role), None, &["cutover", "--mapping", s(&path)])
        .expect_code(0);
    exact(&db);
    assert!(db
        .source_sql_as(
            &role,
            "SELECT phone FROM joint.readings_by_retailer LIMIT 1"
        )
        .is_err_and(|e| e.contains("permission denied")));
}

#[test]
fn a_reading_under_two_retailers_contracts_stops_the_run_even_if_one_is_out_of_scope() {
    let db = with_readings();
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    // Another retailer's contract overlapping an own customer's: the view lists that
    // reading twice, once out of the scope. Ownership is ambiguous, so nothing crosses.
    db.source_sql(
        "INSERT INTO joint.contracts SELECT contract_id + 90000000, supply_point_id, holder_name, holder_name_kana, \
             phone, contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, \
             'R0002', supply_kind, wheeling_contract_no, wheeling_rate_plan, start_date, end_date, updated_at \
         FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' \
           AND supply_point_id IN (SELECT supply_point_id FROM joint.meter_readings) LIMIT 1",
    );
    let run = db.shadan(&["sync", "--mapping", MAPPING]);
    run.expect_stderr(1, "rows outside the scope counted");
    db.target_sql("TRUNCATE retail.readings; DROP SCHEMA shadan CASCADE");
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(1);
    assert_eq!(db.target_sql("SELECT count(*) FROM retail.readings"), "0");
}

#[test]
fn a_null_key_in_a_view_stops_the_run_whichever_batch_it_would_fall_in() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA j; CREATE TABLE j.notes (id int PRIMARY KEY, body text, rc text NOT NULL); \
         INSERT INTO j.notes SELECT g, 'note ' || g, CASE WHEN g % 3 = 0 THEN 'R0002' ELSE 'R0001' END \
         FROM generate_series(1, 1000) g; \
         CREATE VIEW j.notes_v AS SELECT CASE WHEN id = 500 THEN NULL ELSE id END AS id, body, rc FROM j.notes",
    );
    db.target_sql("CREATE SCHEMA r; CREATE TABLE r.notes (id int PRIMARY KEY, body text)");
    let path = write_mapping(
        &db,
        "[mapping]\nname = \"n\"\nown_retailer = \"R0001\"\n\n[[table]]\nsource = \"j.notes_v\"\n\
         target = \"r.notes\"\nkey = [\"id\"]\nscope = \"own\"\nowner = \"rc\"\n\n[table.columns]\n\
         id = \"public\"\nbody = \"public\"\nrc = \"non_public\"\n",
    );
    let run = db.shadan(&["cutover", "--mapping", s(&path), "--batch-rows", "100"]);
    run.expect_stderr(1, "NULL");
}

//! `shadan sync`: after a night of changes the target equals the projection computed
//! independently on the source, only changed rows are written, a customer who left the
//! own retailer keeps no own field, and a killed sync is repaired by the next one.

use serde_json::Value;

use crate::support::{reference_data, reference_mapping, s, write_mapping, TestDb};

const MAPPING: &str = "mappings/retail.toml";

fn copied(n: usize, batch_rows: &str) -> TestDb {
    let db = TestDb::with_reference_schema();
    reference_data(&db, n);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", batch_rows])
        .expect_code(0);
    db
}

fn sync(db: &TestDb, mapping: &str) -> Value {
    let run = db.shadan(&["sync", "--mapping", mapping, "--json"]);
    run.expect_code(0);
    run.json()
}

/// (inserted, updated, deleted, purged) of a table in a sync manifest.
fn changes(manifest: &Value, target: &str) -> (u64, u64, u64, u64) {
    let t = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap();
    let c = &t["changes"];
    let n = |k: &str| c[k].as_u64().unwrap();
    (n("inserted"), n("updated"), n("deleted"), n("purged"))
}

/// Rows inserted + updated + deleted in the target's mapped tables, per the server.
fn rows_written(db: &TestDb) -> u64 {
    db.target_sql(
        "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables WHERE schemaname = 'retail'",
    )
    .parse()
    .unwrap()
}

#[test]
fn a_night_of_changes_is_applied_exactly_and_only_changed_rows_are_written() {
    let db = copied(3000, "400");
    let own = |offset: u32| {
        db.source_sql(&format!(
            "SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' ORDER BY contract_id OFFSET {offset} LIMIT 1"
        ))
    };
    let (switch_away, move_out, non_public_only) = (own(10), own(20), own(30));
    let switch_to = db.source_sql(
        "SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0007' AND supply_kind = 'retail' ORDER BY contract_id LIMIT 1",
    );
    let before = rows_written(&db);
    db.source_sql(&format!(
        "UPDATE joint.contracts SET retailer_code = 'R0003' WHERE contract_id = {switch_away};
         UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id = {switch_to};
         DELETE FROM joint.contracts WHERE contract_id = {move_out};
         UPDATE joint.contracts SET wheeling_rate_plan = 'changed', updated_at = now() WHERE contract_id = {non_public_only};
         UPDATE joint.supply_points SET address = address || ' 2F' WHERE supply_point_id = '0300000000000000000042';
         INSERT INTO joint.supply_points VALUES ('0399999999999999999999', '宮城県仙台市青葉区新町1-1', '980-0001', 'low', '仙台', 'M1', now());
         INSERT INTO joint.contracts (contract_id, supply_point_id, holder_name, phone, retailer_code, supply_kind, start_date)
             VALUES (8000001, '0399999999999999999999', '新規 顧客', '022-000-0000', 'R0001', 'retail', '2026-11-01');"
    ));
    let manifest = sync(&db, MAPPING);
    db.assert_reference_copy_exact();
    assert_eq!(
        changes(&manifest, "retail.contracts"),
        (2, 0, 2, 0),
        "switch-to and new in; switch-away and move-out out"
    );
    assert_eq!(
        changes(&manifest, "retail.supply_points"),
        (1, 1, 0, 0),
        "new supply point, address change"
    );
    assert_eq!(
        db.target_sql(&format!("SELECT count(*) FROM retail.contracts WHERE contract_id IN ({switch_away}, {move_out})")),
        "0"
    );
    assert_eq!(
        rows_written(&db) - before,
        6,
        "rows written equal rows changed"
    );

    let again = sync(&db, MAPPING);
    assert_eq!(changes(&again, "retail.contracts"), (0, 0, 0, 0));
    assert_eq!(changes(&again, "retail.supply_points"), (0, 0, 0, 0));
    assert_eq!(
        rows_written(&db) - before,
        6,
        "a second sync writes nothing"
    );
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn a_change_to_a_non_public_column_alone_writes_nothing() {
    let db = copied(2000, "500");
    let before = rows_written(&db);
    db.source_sql("UPDATE joint.contracts SET wheeling_contract_no = wheeling_contract_no || 'X', updated_at = now(); UPDATE joint.supply_points SET meter_id = 'M0', updated_at = now()");
    let manifest = sync(&db, MAPPING);
    assert_eq!(changes(&manifest, "retail.contracts"), (0, 0, 0, 0));
    assert_eq!(changes(&manifest, "retail.supply_points"), (0, 0, 0, 0));
    assert_eq!(rows_written(&db), before);
}

#[test]
fn with_scope_all_a_customer_who_switches_away_loses_their_own_fields_the_same_night() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 2000);
    db.target_sql("ALTER TABLE retail.contracts ALTER COLUMN night_equipment DROP NOT NULL, ALTER COLUMN start_date DROP NOT NULL");
    let path = write_mapping(
        &db,
        &reference_mapping().replace("scope = \"own\"", "scope = \"all\""),
    );
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    let away = db.source_sql("SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' AND phone IS NOT NULL ORDER BY 1 LIMIT 1");
    let to = db.source_sql("SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0009' AND supply_kind = 'retail' AND phone IS NOT NULL ORDER BY 1 LIMIT 1");
    db.source_sql(&format!(
        "UPDATE joint.contracts SET retailer_code = 'R0009' WHERE contract_id = {away};
         UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id = {to};"
    ));
    let manifest = sync(&db, s(&path));
    assert_eq!(
        changes(&manifest, "retail.contracts"),
        (0, 1, 0, 1),
        "one row gains own fields, one is purged"
    );
    let own_cols = "holder_name, holder_name_kana, phone_number, contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, start_date, end_date";
    assert_eq!(
        db.target_sql(&format!(
            "SELECT num_nonnulls({own_cols}) FROM retail.contracts WHERE contract_id = {away}"
        )),
        "0",
        "no own value left for the customer who left"
    );
    assert_eq!(
        db.target_rows(&format!(
            "SELECT holder_name, phone_number FROM retail.contracts WHERE contract_id = {to}"
        )),
        db.source_rows(&format!(
            "SELECT holder_name, phone FROM joint.contracts WHERE contract_id = {to}"
        ))
    );
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);
}

#[test]
fn a_sync_killed_midway_is_repaired_by_the_next_sync() {
    let db = copied(20_000, "100");
    db.source_sql(
        "UPDATE joint.supply_points SET address = address || ' 別棟';
         UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id % 10 = 3 AND retailer_code = 'R0001';
         UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id % 10 = 4 AND supply_kind = 'retail';",
    );
    let mut child = db.spawn_quiet(&["sync", "--mapping", MAPPING, "--jobs", "2"]);
    let synced = "SELECT count(*) FROM shadan.batches WHERE run_id = (SELECT max(run_id) FROM shadan.runs WHERE command = 'sync')";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db
        .try_target_sql(synced)
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(0)
        < 10
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "sync finished before it could be killed; the test needs more data"
        );
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Until a sync completes, customers who switched away are still there: verify calls
    // that a leak, not a mere difference.
    let verify = db.shadan(&["verify", "--mapping", MAPPING, "--json"]);
    verify.expect_code(4);
    assert_eq!(verify.json()["leaks"][0]["kind"], "out_of_scope");
    sync(&db, MAPPING);
    db.assert_reference_copy_exact();
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
    let again = sync(&db, MAPPING);
    assert_eq!(changes(&again, "retail.contracts"), (0, 0, 0, 0));
}

#[test]
fn schema_drift_stops_sync_before_anything_is_written() {
    let db = copied(1000, "300");
    db.source_sql("UPDATE joint.supply_points SET address = 'moved' WHERE supply_point_id = '0300000000000000000001'");
    let before = db.target_rows("SELECT * FROM retail.supply_points ORDER BY 1");
    let runs = db.target_sql("SELECT count(*) FROM shadan.runs");
    for drift in [
        "ALTER TABLE joint.contracts ADD COLUMN email text",
        "ALTER TABLE joint.contracts DROP COLUMN email; ALTER TABLE joint.contracts ALTER COLUMN phone TYPE varchar(20)",
    ] {
        db.source_sql(drift);
        let run = db.shadan(&["sync", "--mapping", MAPPING]);
        run.expect_stderr(2, "joint.contracts.");
        assert_eq!(db.target_rows("SELECT * FROM retail.supply_points ORDER BY 1"), before, "target unchanged");
        assert_eq!(db.target_sql("SELECT count(*) FROM shadan.runs"), runs, "no run started");
    }
}

#[test]
fn a_batch_that_grew_far_past_its_size_is_split() {
    let db = copied(500, "100");
    let batches_before: u32 = db
        .target_sql(
            "SELECT count(*) FROM shadan.batches WHERE target_table = 'retail.supply_points'",
        )
        .parse()
        .unwrap();
    reference_data(&db, 1000);
    let manifest = db.shadan(&[
        "sync",
        "--mapping",
        MAPPING,
        "--batch-rows",
        "100",
        "--json",
    ]);
    manifest.expect_code(0);
    assert_eq!(changes(&manifest.json(), "retail.supply_points").0, 1000);
    db.assert_reference_copy_exact();
    let batches_after: u32 = db
        .target_sql(
            "SELECT count(*) FROM shadan.batches WHERE target_table = 'retail.supply_points'",
        )
        .parse()
        .unwrap();
    assert!(
        batches_after >= batches_before + 8,
        "{batches_before} -> {batches_after} batches"
    );
    assert_eq!(
        db.target_sql("SELECT max(rows) <= 200 AND bool_and(rows IS NOT NULL) FROM shadan.batches"),
        "t"
    );
    let again = sync(&db, MAPPING);
    assert_eq!(
        changes(&again, "retail.supply_points"),
        (0, 0, 0, 0),
        "split batches carry correct checkpoints"
    );
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn another_teams_schema_with_a_composite_text_key_copies_syncs_and_verifies() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA nw;
         CREATE TABLE nw.meter_reading (area_code text NOT NULL, spid varchar(22) NOT NULL,
            read_on date, kwh numeric(12,3), customer_name text, retailer int NOT NULL,
            tariff_class smallint NOT NULL, meter_serial text, PRIMARY KEY (spid, area_code));
         INSERT INTO nw.meter_reading
         SELECT (ARRAY['仙台','Sendai','盛岡 北','a''b'])[1 + i % 4], lpad((i / 4)::text, 22, '0'),
                date '2026-01-01' + i % 300, (i % 9973) / 7.0, '顧客' || i, 10 + i % 10, 1 + i % 5, 'MS' || i
         FROM generate_series(1, 4000) i;",
    );
    db.target_sql(
        "CREATE SCHEMA rt;
         CREATE TABLE rt.readings (spid varchar(22) NOT NULL, area text NOT NULL, read_on date,
            kwh numeric(12,3), name text, PRIMARY KEY (spid, area));",
    );
    let mapping = crate::support::OTHER_TEAM_MAPPING;
    let path = write_mapping(&db, mapping);
    let expected = "SELECT spid, area_code, read_on, CASE WHEN retailer = 17 THEN kwh END, \
        CASE WHEN retailer = 17 THEN customer_name END FROM nw.meter_reading WHERE tariff_class IN (1, 2, 3) ORDER BY 1, 2";
    let actual = "SELECT spid, area, read_on, kwh, name FROM rt.readings ORDER BY 1, 2";
    db.shadan(&[
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "250",
        "--jobs",
        "2",
    ])
    .expect_code(0);
    assert_eq!(db.source_rows(expected), db.target_rows(actual));
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);

    db.source_sql(
        "UPDATE nw.meter_reading SET retailer = 12 WHERE retailer = 17 AND spid < '0000000000000000000100';
         UPDATE nw.meter_reading SET retailer = 17 WHERE retailer = 11 AND spid > '0000000000000000000900';
         UPDATE nw.meter_reading SET tariff_class = 5 WHERE spid BETWEEN '0000000000000000000500' AND '0000000000000000000510';
         DELETE FROM nw.meter_reading WHERE spid LIKE '%77';
         INSERT INTO nw.meter_reading VALUES ('新区', '9999999999999999999999', '2026-11-21', 1.5, '新しい顧客', 17, 1, 'MSX');",
    );
    let manifest = sync(&db, s(&path));
    assert_eq!(db.source_rows(expected), db.target_rows(actual));
    let (inserted, updated, deleted, purged) = changes(&manifest, "rt.readings");
    assert!(
        inserted >= 1 && updated > 0 && deleted > 0 && purged > 0,
        "{inserted} {updated} {deleted} {purged}"
    );
    db.shadan(&["verify", "--mapping", s(&path), "--deep"])
        .expect_code(0);
}

#[test]
fn sync_can_fill_an_empty_target_without_a_cutover() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 2000);
    let manifest = db.shadan(&[
        "sync",
        "--mapping",
        MAPPING,
        "--batch-rows",
        "300",
        "--json",
    ]);
    manifest.expect_code(0);
    db.assert_reference_copy_exact();
    let inserted = changes(&manifest.json(), "retail.contracts").0;
    assert_eq!(
        inserted.to_string(),
        db.target_sql("SELECT count(*) FROM retail.contracts")
    );
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
    assert_eq!(
        changes(&sync(&db, MAPPING), "retail.contracts"),
        (0, 0, 0, 0)
    );
}

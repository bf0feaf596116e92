//! Foreign keys in the retail schema: cutover loads so that they hold when it is done
//! (also after a kill and --resume), sync writes parents before children and deletes
//! children before parents, and plan refuses what no order can keep.

use crate::support::{reference_data, reference_mapping, s, write_mapping, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// The reference schemas with a target foreign key from contracts to supply points.
fn with_fk(n: usize) -> TestDb {
    let db = TestDb::with_reference_schema();
    reference_data(&db, n);
    db.target_sql(
        "ALTER TABLE retail.contracts ADD CONSTRAINT contracts_sp_fk \
         FOREIGN KEY (supply_point_id) REFERENCES retail.supply_points",
    );
    db
}

/// A cutover with two workers and small batches, so tables interleave; must succeed.
fn cutover_in_batches(db: &TestDb, batch_rows: &str) {
    db.shadan(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--jobs",
        "2",
        "--batch-rows",
        batch_rows,
    ])
    .expect_code(0);
}

fn fk_is_back(db: &TestDb) {
    assert_eq!(
        db.target_sql("SELECT convalidated FROM pg_constraint WHERE conname = 'contracts_sp_fk'"),
        "t",
        "the foreign key is back and validated"
    );
}

#[test]
fn cutover_with_a_target_foreign_key_loads_in_any_order_and_puts_it_back() {
    let db = with_fk(3000);
    cutover_in_batches(&db, "200");
    db.assert_reference_copy_exact();
    fk_is_back(&db);
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn a_killed_cutover_with_a_foreign_key_resumes_and_then_syncs_in_dependency_order() {
    let db = with_fk(20_000);
    db.cutover_killed_after(5, &["--jobs", "2", "--batch-rows", "300"]);
    // sync refuses while the key is set aside; resume finishes and puts it back.
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(2);
    db.shadan(&["cutover", "--mapping", MAPPING, "--resume"])
        .expect_code(0);
    db.assert_reference_copy_exact();
    fk_is_back(&db);

    // A night with inserts (a new supply point and its contract), deletes (a supply point
    // with its contracts gone) and moves (customers switching both ways).
    db.source_sql(
        "INSERT INTO joint.supply_points (supply_point_id, address, postal_code, voltage_class, area, meter_id, updated_at) \
             SELECT '9999999999999999999999', address, postal_code, voltage_class, area, meter_id, updated_at \
             FROM joint.supply_points LIMIT 1; \
         INSERT INTO joint.contracts SELECT 99999999, '9999999999999999999999', holder_name, holder_name_kana, phone, \
             contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, 'R0001', 'retail', \
             wheeling_contract_no, wheeling_rate_plan, start_date, end_date, updated_at \
             FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' LIMIT 1; \
         CREATE TEMP TABLE gone AS SELECT supply_point_id FROM joint.contracts \
             WHERE retailer_code = 'R0001' AND supply_kind = 'retail' ORDER BY contract_id LIMIT 5; \
         DELETE FROM joint.contracts WHERE supply_point_id IN (SELECT supply_point_id FROM gone); \
         DELETE FROM joint.fit_purchase_contracts WHERE supply_point_id IN (SELECT supply_point_id FROM gone); \
         DELETE FROM joint.supply_points WHERE supply_point_id IN (SELECT supply_point_id FROM gone); \
         UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id IN \
             (SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' ORDER BY contract_id DESC LIMIT 7); \
         UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id IN \
             (SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0003' AND supply_kind = 'retail' LIMIT 7)",
    );
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
    db.assert_reference_copy_exact();
    fk_is_back(&db);
    db.shadan(&["verify", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn plan_refuses_foreign_keys_no_write_order_can_keep() {
    // A parent that keeps fewer rows than its child: child rows would reference nothing.
    let db = TestDb::with_reference_schema();
    db.target_sql(
        "ALTER TABLE retail.contracts ADD CONSTRAINT contracts_sp_fk \
         FOREIGN KEY (supply_point_id) REFERENCES retail.supply_points",
    );
    let narrow = reference_mapping()
        .replace("scope = \"own\"", "scope = \"all\"")
        .replace(
            "key = [\"supply_point_id\"]\nscope = \"all\"",
            "key = [\"supply_point_id\"]\nscope = \"all\"\nonly = { voltage_class = [\"low\"] }",
        );
    let path = write_mapping(&db, &narrow);
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "keeps fewer rows");
    // A table that references itself.
    db.target_sql(
        "ALTER TABLE retail.contracts DROP CONSTRAINT contracts_sp_fk; \
         ALTER TABLE retail.supply_points ADD COLUMN parent char(22) REFERENCES retail.supply_points",
    );
    db.source_sql("ALTER TABLE joint.supply_points ADD COLUMN parent char(22)");
    let cycle = reference_mapping().replace(
        "area            = \"public\"",
        "area            = \"public\"\nparent          = \"public\"",
    );
    let path = write_mapping(&db, &cycle);
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "cycle");
}

#[test]
fn a_cascading_foreign_key_is_refused_and_one_to_a_partitioned_parent_is_kept() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 500);
    db.target_sql(
        "ALTER TABLE retail.contracts ADD CONSTRAINT contracts_sp_fk \
         FOREIGN KEY (supply_point_id) REFERENCES retail.supply_points ON DELETE CASCADE",
    );
    let run = db.shadan(&["plan", "--mapping", MAPPING]);
    run.expect_stderr(2, "CASCADE");
    // The parent partitioned (PostgreSQL clones the key for each partition).
    db.target_sql(
        "ALTER TABLE retail.contracts DROP CONSTRAINT contracts_sp_fk; \
         ALTER TABLE retail.supply_points RENAME TO old_sp; \
         CREATE TABLE retail.supply_points (LIKE retail.old_sp INCLUDING ALL) PARTITION BY HASH (supply_point_id); \
         CREATE TABLE retail.sp0 PARTITION OF retail.supply_points FOR VALUES WITH (MODULUS 2, REMAINDER 0); \
         CREATE TABLE retail.sp1 PARTITION OF retail.supply_points FOR VALUES WITH (MODULUS 2, REMAINDER 1); \
         DROP TABLE retail.old_sp; \
         ALTER TABLE retail.contracts ADD CONSTRAINT contracts_sp_fk \
         FOREIGN KEY (supply_point_id) REFERENCES retail.supply_points",
    );
    cutover_in_batches(&db, "100");
    db.assert_reference_copy_exact();
    fk_is_back(&db);
}

#[test]
fn a_foreign_key_to_columns_other_than_the_parents_key_is_refused() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA s; CREATE TABLE s.p (id int PRIMARY KEY, grp text NOT NULL); \
         CREATE TABLE s.c (id int PRIMARY KEY, pid int NOT NULL, grp text NOT NULL)",
    );
    db.target_sql(
        "CREATE SCHEMA r; CREATE TABLE r.p (id int PRIMARY KEY, grp text NOT NULL, UNIQUE (id, grp)); \
         CREATE TABLE r.c (id int PRIMARY KEY, pid int NOT NULL, grp text NOT NULL, \
             FOREIGN KEY (pid, grp) REFERENCES r.p (id, grp))",
    );
    let table = |name: &str, cols: &str| {
        format!(
            "\n[[table]]\nsource = \"s.{name}\"\ntarget = \"r.{name}\"\nkey = [\"id\"]\nscope = \"all\"\n\n[table.columns]\n{cols}"
        )
    };
    let mapping = format!(
        "[mapping]\nname = \"fk\"\nown_retailer = \"R0001\"\n{}{}",
        table("p", "id = \"public\"\ngrp = \"public\"\n"),
        table("c", "id = \"public\"\npid = \"public\"\ngrp = \"public\"\n")
    );
    let path = write_mapping(&db, &mapping);
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "other than its mapped key");
}

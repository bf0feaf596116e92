//! `shadan plan`: the mapping is checked against both real catalogs, every problem is
//! listed at once with file, line, table and column, and the source query carries only
//! what may cross.

use crate::support::{reference_mapping, s, write_mapping, TestDb};

/// Runs `plan` with a mapping text and returns the run.
fn plan_with(db: &TestDb, mapping: &str) -> crate::support::Run {
    let path = write_mapping(db, mapping);
    db.shadan(&["plan", "--mapping", s(&path)])
}

/// Asserts that `plan` exits 2 and that stderr has a problem line naming all `needles`.
fn rejects(db: &TestDb, mapping: &str, needles: &[&str]) {
    let run = plan_with(db, mapping);
    run.expect_code(2);
    assert!(
        run.stderr
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n))),
        "no problem line contains all of {needles:?}:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "nothing on stdout when invalid: {}",
        run.stdout
    );
}

#[test]
fn reference_mapping_shows_every_column_by_class_and_a_query_without_non_public_columns() {
    let db = TestDb::with_reference_schema();
    let run = db.shadan(&["plan", "--mapping", "mappings/retail.toml", "--json"]);
    run.expect_code(0);
    let plan = run.json();
    let contracts = plan["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == "joint.contracts")
        .expect("contracts planned");
    let names = |class: &str, field: &str| -> Vec<String> {
        contracts[class]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[field].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("public", "source"),
        ["contract_id", "supply_point_id"]
    );
    assert!(names("own", "target").contains(&"phone_number".to_string()));
    assert_eq!(names("own", "source").len(), 9);
    let mut non_public = names("non_public", "name");
    non_public.sort();
    assert_eq!(
        non_public,
        [
            "retailer_code",
            "supply_kind",
            "updated_at",
            "wheeling_contract_no",
            "wheeling_rate_plan"
        ]
    );
    assert_eq!(
        plan["not_replicated"],
        serde_json::json!(["joint.fit_purchase_contracts", "joint.retailers"])
    );

    // The select list holds no non-public column; the owner and `only` columns appear only
    // inside the scope test (CASE WHEN / WHERE), evaluated in the source server.
    let query = contracts["query"].as_str().unwrap();
    let (select_list, where_clause) = query.split_once(" FROM ").unwrap();
    let select_without_tests: String = select_list
        .split("CASE WHEN ")
        .map(|part| part.split_once(" THEN ").map_or(part, |(_, rest)| rest))
        .collect();
    for col in &non_public {
        assert!(
            !select_without_tests.contains(&format!("\"{col}\"")),
            "{col} selected: {query}"
        );
    }
    for col in ["wheeling_contract_no", "wheeling_rate_plan", "updated_at"] {
        assert!(!query.contains(col), "{col} appears in the query: {query}");
    }
    assert!(
        where_clause.contains("\"retailer_code\" OPERATOR(pg_catalog.=) "),
        "{query}"
    );
    assert!(
        where_clause.contains("\"supply_kind\" OPERATOR(pg_catalog.=) ANY"),
        "{query}"
    );
    assert!(
        !query.contains("R0001"),
        "own_retailer must be bound, not spliced: {query}"
    );
    assert!(
        !query.contains("'retail'"),
        "only values must be bound, not spliced: {query}"
    );

    let text = db.shadan(&["plan", "--mapping", "mappings/retail.toml"]);
    text.expect_code(0);
    assert!(text.stdout.contains("joint.contracts -> retail.contracts"));
    assert!(text.stdout.contains("phone -> phone_number"));
    assert!(text.stdout.contains(
        "not replicated (no mapping entry): joint.fit_purchase_contracts, joint.retailers"
    ));
}

#[test]
fn a_source_column_added_after_review_stops_plan_naming_it() {
    let db = TestDb::with_reference_schema();
    db.source_sql("ALTER TABLE joint.contracts ADD COLUMN email text");
    let run = db.shadan(&["plan", "--mapping", "mappings/retail.toml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("joint.contracts.email: the source column is not classified"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("mappings/retail.toml:"),
        "names the file: {}",
        run.stderr
    );
}

#[test]
fn every_problem_is_listed_at_once_with_file_and_line() {
    let db = TestDb::with_reference_schema();
    db.source_sql("ALTER TABLE joint.contracts ADD COLUMN email text; ALTER TABLE joint.supply_points ADD COLUMN note text");
    let mapping = reference_mapping().replace(
        "area            = \"public\"",
        "area            = \"publik\"",
    );
    let path = write_mapping(&db, &mapping);
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_code(2);
    let problems: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(problems.len(), 3, "{}", run.stderr);
    assert!(run.stderr.contains("joint.contracts.email"));
    assert!(run.stderr.contains("joint.supply_points.note"));
    let area_line = mapping
        .lines()
        .position(|l| l.starts_with("area "))
        .unwrap()
        + 1;
    assert!(
        run.stderr.contains(&format!(
            "{}:{area_line}: joint.supply_points.area: unknown class `publik`",
            s(&path)
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_class_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace(
        "meter_id        = \"non_public\"",
        "meter_id        = \"secret\"",
    );
    rejects(
        &db,
        &m,
        &["joint.supply_points.meter_id", "unknown class `secret`"],
    );
}

#[test]
fn unknown_key_is_rejected_with_its_line() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace("scope = \"all\"", "scope = \"all\"\nkee = [\"x\"]");
    let line = m.lines().position(|l| l.starts_with("kee")).unwrap() + 1;
    rejects(&db, &m, &[&format!(":{line}:"), "unknown field `kee`"]);
}

#[test]
fn key_column_that_is_not_public_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace(
        "contract_id                = \"public\"",
        "contract_id                = \"own\"",
    );
    rejects(
        &db,
        &m,
        &[
            "joint.contracts.contract_id",
            "key columns must be \"public\"",
        ],
    );
}

#[test]
fn own_column_or_own_scope_without_owner_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace("owner = \"retailer_code\"\n", "");
    rejects(&db, &m, &["joint.contracts", "needs `owner = "]);
    let m =
        reference_mapping().replace("address         = \"public\"", "address         = \"own\"");
    rejects(&db, &m, &["joint.supply_points", "needs `owner = "]);
}

#[test]
fn owner_column_missing_from_the_source_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace("owner = \"retailer_code\"", "owner = \"retailer\"");
    rejects(
        &db,
        &m,
        &["joint.contracts.retailer", "owner column does not exist"],
    );
}

#[test]
fn classified_column_missing_from_the_source_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace(
        "end_date                   = \"own\"",
        "end_date                   = \"own\"\nEnd_Date = \"public\"",
    );
    rejects(&db, &m, &["joint.contracts.End_Date", "does not have"]);
}

#[test]
fn target_column_produced_twice_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace(
        "holder_name_kana           = \"own\"",
        "holder_name_kana           = { class = \"own\", to = \"holder_name\" }",
    );
    rejects(
        &db,
        &m,
        &["retail.contracts.holder_name", "produced by 2 entries"],
    );
}

#[test]
fn target_column_not_produced_is_rejected() {
    let db = TestDb::with_reference_schema();
    db.target_sql("ALTER TABLE retail.contracts ADD COLUMN notes text");
    let run = db.shadan(&["plan", "--mapping", "mappings/retail.toml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("retail.contracts.notes: the target column is not produced"),
        "{}",
        run.stderr
    );
}

#[test]
fn type_mismatch_is_rejected_including_typmod() {
    let db = TestDb::with_reference_schema();
    db.target_sql(
        "ALTER TABLE retail.contracts ALTER COLUMN contracted_capacity_kva TYPE numeric(10,2);
         ALTER TABLE retail.supply_points ALTER COLUMN supply_point_id TYPE text",
    );
    let run = db.shadan(&["plan", "--mapping", "mappings/retail.toml"]);
    run.expect_stderr(2, "joint.contracts.contracted_capacity_kva: type mismatch: source is numeric(8,1), target retail.contracts.contracted_capacity_kva is numeric(10,2)");
    assert!(
        run.stderr.contains(
            "joint.supply_points.supply_point_id: type mismatch: source is character(22)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn rename_of_a_non_public_column_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace(
        "meter_id        = \"non_public\"",
        "meter_id        = { class = \"non_public\", to = \"meter\" }",
    );
    rejects(
        &db,
        &m,
        &[
            "joint.supply_points.meter_id",
            "`to` on a non_public column",
        ],
    );
}

#[test]
fn the_same_source_or_target_table_twice_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping();
    let first_table =
        &m[m.find("[[table]]").unwrap()..m.find("# The retail company's own").unwrap()];
    rejects(
        &db,
        &format!("{m}\n{first_table}"),
        &["joint.supply_points", "mapped twice"],
    );
    let retarget = first_table.replace(
        "source = \"joint.supply_points\"",
        "source = \"joint.retailers\"",
    );
    let run = plan_with(&db, &format!("{m}\n{retarget}"));
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("retail.supply_points: the target table is written by two entries"),
        "{}",
        run.stderr
    );
}

#[test]
fn only_on_a_missing_column_is_rejected() {
    let db = TestDb::with_reference_schema();
    let m = reference_mapping().replace("only = { supply_kind", "only = { supply_type");
    rejects(
        &db,
        &m,
        &[
            "joint.contracts.supply_type",
            "`only` filter names a column",
        ],
    );
}

#[test]
fn unreachable_server_exits_1_without_printing_the_password() {
    let db = TestDb::with_reference_schema();
    let run = db
        .command(&["plan", "--mapping", "mappings/retail.toml"])
        .env(
            "SHADAN_SOURCE",
            "postgres://grid:hunter2-secret@127.0.0.1:1/joint",
        )
        .output()
        .unwrap();
    let run = crate::support::Run::from(run);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("cannot connect to the source database grid@127.0.0.1:1/joint"),
        "{}",
        run.stderr
    );
    assert!(!run.all_output().contains("hunter2-secret"));
}

#[test]
fn hostile_mixed_case_and_keyword_identifiers_are_just_identifiers() {
    let db = TestDb::new();
    db.source_sql(
        r#"CREATE SCHEMA "Grid.Ops";
           CREATE TABLE "Grid.Ops"."a""; drop table x; --" ("ID" int PRIMARY KEY, "select" text, "MixedCase" text, "from" text);
           CREATE TABLE x (y int PRIMARY KEY);"#,
    );
    db.target_sql(r#"CREATE SCHEMA "Retail"; CREATE TABLE "Retail"."Order" ("ID" int PRIMARY KEY, "select" text, "Mixed Case" text);"#);
    let mapping = r#"
[mapping]
name = "hostile"
own_retailer = "R'; --"

[[table]]
source = '"Grid.Ops"."a""; drop table x; --"'
target = "Retail.Order"
key = ["ID"]
scope = "all"

[table.columns]
ID = "public"
select = "public"
MixedCase = { class = "public", to = "Mixed Case" }
from = "non_public"
"#;
    let run = plan_with(&db, mapping);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            r#"SELECT "ID", "select", "MixedCase" FROM ONLY "Grid.Ops"."a""; drop table x; --""#
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        db.source_sql("SELECT count(*) FROM x"),
        "0",
        "table x still exists"
    );
    // Case matters: `id` is not `ID`.
    rejects(
        &db,
        &mapping.replace("key = [\"ID\"]", "key = [\"id\"]"),
        &["key column does not exist"],
    );
}

#[test]
fn another_teams_schema_and_mapping_validates_and_plans() {
    // A gas-and-power retailer's layout: composite text key, scope "all" with own columns,
    // an integer `only` filter, renames, and a table left unmapped on purpose.
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA nw;
         CREATE TABLE nw.meter_reading (area_code text NOT NULL, spid varchar(22) NOT NULL,
            read_on date, kwh numeric(12,3), customer_name text, retailer int NOT NULL,
            tariff_class smallint NOT NULL, meter_serial text, PRIMARY KEY (spid, area_code));
         CREATE TABLE nw.outage_log (id bigserial PRIMARY KEY, note text);",
    );
    db.target_sql(
        "CREATE SCHEMA rt;
         CREATE TABLE rt.readings (spid varchar(22) NOT NULL, area text NOT NULL, read_on date,
            kwh numeric(12,3), name text, PRIMARY KEY (spid, area));",
    );
    let mapping = crate::support::OTHER_TEAM_MAPPING;
    let path = write_mapping(&db, mapping);
    let run = db.shadan(&["plan", "--mapping", s(&path), "--json"]);
    run.expect_code(0);
    let plan = run.json();
    let t = &plan["tables"][0];
    assert_eq!(
        t["key"],
        serde_json::json!(["spid", "area_code"]),
        "key in primary key order"
    );
    assert_eq!(t["scope"], "all");
    assert_eq!(plan["not_replicated"], serde_json::json!(["nw.outage_log"]));
    let query = t["query"].as_str().unwrap();
    assert!(
        query.starts_with(
            r#"SELECT "spid", "area_code", "read_on", CASE WHEN "retailer" OPERATOR(pg_catalog.=) "#
        ),
        "{query}"
    );
    assert!(
        query.contains(r#"THEN "kwh" END AS "kwh""#)
            && query.contains(r#"THEN "customer_name" END AS "customer_name""#),
        "{query}"
    );
    assert!(query.contains(r#""tariff_class" OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.unnest(pg_catalog.current_setting('shadan.only_1_1')::pg_catalog.text[]::pg_catalog.int2[])))"#), "{query}");
    assert!(!query.contains("meter_serial"));
    assert_eq!(
        t["settings"][0]["value"],
        serde_json::json!(["1", "2", "3"])
    );
}

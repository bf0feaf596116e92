//! A neighbour on the joint server: a role that can create objects in `public` (the
//! default before PostgreSQL 15, kept by pg_upgrade), or name columns, or run DDL.

use crate::support::held::{wait_until, Held};
use crate::support::{reference_data, s, through_export_views, write_mapping, TestDb};

/// A joint table whose owner and `only` columns are varchar, as in the reproduced attack.
const SCHEMA: &str = "CREATE SCHEMA s; \
    CREATE TABLE s.cust (id varchar(10) PRIMARY KEY, name text NOT NULL, phone text, \
        retailer varchar(5) NOT NULL, kind varchar NOT NULL); \
    INSERT INTO s.cust SELECT 'c' || pg_catalog.lpad(g::text, 6, '0'), 'name ' || g, 'phone-' || g, \
        CASE WHEN g % 4 = 0 THEN 'R0002' ELSE 'R0001' END, \
        CASE WHEN g % 5 = 0 THEN 'last_resort' ELSE 'retail' END \
    FROM generate_series(1, 2000) g";

const TARGET: &str = "CREATE SCHEMA r; \
    CREATE TABLE r.cust (id varchar(10) PRIMARY KEY, name text NOT NULL, phone text)";

const MAPPING: &str = r#"
[mapping]
name = "shadowed"
own_retailer = "R0001"

[[table]]
source = "s.cust"
target = "r.cust"
key = ["id"]
scope = "all"
owner = "retailer"
only = { kind = ["retail"] }

[table.columns]
id       = "public"
name     = "public"
phone    = "own"
retailer = "non_public"
kind     = "non_public"
"#;

/// The permitted projection, computed with pg_catalog's operators whatever is in `public`.
const EXPECTED: &str =
    "SELECT id, name, CASE WHEN retailer OPERATOR(pg_catalog.=) 'R0001' THEN phone END \
    FROM s.cust WHERE kind OPERATOR(pg_catalog.=) 'retail' ORDER BY id COLLATE \"C\"";
const ACTUAL: &str = "SELECT id, name, phone FROM r.cust ORDER BY id COLLATE \"C\"";

/// A neighbour role creates `=` (always true) for varchar in `public` on the source, and
/// `>`/`<=` (always false) for varchar on the target.
fn shadow_operators(db: &TestDb) {
    let neighbour = format!("neighbour_{}", db.name);
    for (side, ops) in [("source", &["="][..]), ("target", &[">", "<="][..])] {
        let sql = format!(
            "CREATE ROLE {neighbour} LOGIN; GRANT CREATE ON SCHEMA public TO {neighbour}; \
             SET ROLE {neighbour}; \
             CREATE FUNCTION public.yes(varchar, varchar) RETURNS bool LANGUAGE sql AS 'select true'; \
             CREATE FUNCTION public.no(varchar, varchar) RETURNS bool LANGUAGE sql AS 'select false'; {}",
            ops.iter()
                .map(|op| format!(
                    "CREATE OPERATOR public.{op} (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.{});",
                    if *op == "=" { "yes" } else { "no" }
                ))
                .collect::<String>()
        );
        if side == "source" {
            db.source_sql(&sql);
        } else {
            db.target_sql(&sql);
        }
    }
}

#[test]
fn operators_a_neighbour_creates_in_public_neither_widen_the_copy_nor_fool_sync_or_verify() {
    let db = TestDb::new();
    db.source_sql(SCHEMA);
    db.target_sql(TARGET);
    shadow_operators(&db);
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["cutover", "--mapping", s(&path), "--batch-rows", "300"])
        .expect_code(0);
    let (expected, actual) = (db.source_rows(EXPECTED), db.target_rows(ACTUAL));
    assert_eq!(expected.lines().count(), 1600, "the test data");
    assert!(
        expected == actual,
        "target differs from the projection: {} target rows",
        actual.lines().count()
    );

    // Changes, then sync: ranged batches on the target must select the right rows.
    // (The test's own SQL pins search_path too: the neighbour's `=` is always true.)
    db.source_sql(
        "SET search_path = pg_catalog; DELETE FROM s.cust WHERE id IN ('c000003', 'c000777', 'c001999'); \
         UPDATE s.cust SET retailer = 'R0002' WHERE id = 'c000001'; \
         INSERT INTO s.cust VALUES ('c000000', 'new', 'phone-new', 'R0001', 'retail')",
    );
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "sync");
    db.shadan(&["verify", "--mapping", s(&path), "--deep"])
        .expect_code(0);

    // A row that should not be there is still found.
    db.target_sql("INSERT INTO r.cust VALUES ('c000005', 'name 5', 'phone-5')");
    assert_eq!(db.source_sql("SELECT count(*) FROM s.cust"), "1998");
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(4);
}

#[test]
fn export_views_are_created_with_pg_catalog_operators_whatever_public_holds() {
    let db = TestDb::new();
    db.source_sql(SCHEMA);
    db.target_sql(TARGET);
    shadow_operators(&db);
    let role = format!("viewer_{}", db.name);
    let views = through_export_views(&db, MAPPING, &role);
    db.shadan_as(Some(&role), None, &["cutover", "--mapping", s(&views)])
        .expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "through export views");
}

#[test]
fn a_column_name_cannot_inject_sql_into_the_grants_script() {
    let db = TestDb::with_reference_schema();
    let mallory = format!("mallory_{}", db.name);
    db.source_sql(&format!("CREATE ROLE {mallory} LOGIN"));
    let hostile = format!("x\nALTER ROLE {mallory} SUPERUSER;\n--");
    db.source_sql(&format!(
        "ALTER TABLE joint.supply_points ADD COLUMN \"{hostile}\" text"
    ));
    let hostile_target = format!("y\nALTER ROLE {mallory} CREATEROLE;\n--");
    db.target_sql(&format!(
        "ALTER TABLE retail.supply_points RENAME TO \"{hostile_target}\""
    ));
    let mapping = crate::support::reference_mapping()
        .replace(
            "target = \"retail.supply_points\"",
            &format!(
                "target = \"retail.{}\"",
                hostile_target.replace('\n', "\\n")
            ),
        )
        .replace(
            "meter_id        = \"non_public\"",
            &format!(
                "meter_id        = \"non_public\"\n\"{}\" = \"non_public\"",
                hostile.replace('\n', "\\n")
            ),
        );
    let path = write_mapping(&db, &mapping);
    let run = db.shadan(&[
        "grants",
        "--mapping",
        s(&path),
        "--role",
        &format!("r_{}", db.name),
    ]);
    run.expect_code(0);
    db.source_sql(&run.stdout);
    let run = db.shadan(&[
        "grants",
        "--mapping",
        s(&path),
        "--views",
        "--role",
        &format!("v_{}", db.name),
    ]);
    run.expect_code(0);
    db.source_sql(&run.stdout);
    assert_eq!(
        db.source_sql(&format!(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = '{mallory}'"
        )),
        "f",
        "the grants script ran SQL hidden in a name"
    );
}

#[test]
fn columns_swapped_while_a_run_starts_stop_it_before_anything_is_read() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 2000);
    // A neighbour swaps a public and a non-public column name in a transaction that is
    // still open when the cutover reads the catalog, and commits while it starts.
    let ddl = Held::open(
        &db.source_url(),
        "BEGIN; ALTER TABLE joint.contracts RENAME COLUMN phone TO shadan_tmp; \
         ALTER TABLE joint.contracts RENAME COLUMN wheeling_contract_no TO phone; \
         ALTER TABLE joint.contracts RENAME COLUMN shadan_tmp TO wheeling_contract_no;",
    );
    let held = "SELECT count(*) FROM pg_locks WHERE relation = 'joint.contracts'::regclass \
                AND mode = 'AccessExclusiveLock' AND granted";
    wait_until(30, "the DDL never took its lock", || {
        db.source_sql(held) == "1"
    });
    let mut run = db
        .command(&["cutover", "--mapping", "mappings/retail.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the cutover is blocked behind the DDL, then commit it.
    let waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'joint.contracts'::regclass AND NOT granted";
    wait_until(30, "the cutover never waited for the DDL", || {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the cutover did not wait for the DDL"
        );
        db.source_sql(waiting) != "0"
    });
    assert!(ddl.end("COMMIT;"));
    let run = crate::support::Run::from(run.wait_with_output().unwrap());
    run.expect_stderr(1, "columns of the source table");
    assert_eq!(
        db.target_sql("SELECT count(*) FROM retail.contracts WHERE phone_number IS NOT NULL"),
        "0",
        "values were read under the swapped names"
    );
}

#[test]
fn a_run_that_lost_its_writer_lock_commits_no_further_batch() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 30_000);
    let mut child = db.spawn_quiet(&[
        "cutover",
        "--mapping",
        "mappings/retail.toml",
        "--batch-rows",
        "200",
        "--jobs",
        "1",
    ]);
    db.wait_for_batches(&mut child, 2);
    db.target_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND classid = 21320 AND objid = 1 AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    );
    let at_kill = db.written_batches();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run went on without its lock");
    assert!(
        db.written_batches() <= at_kill + 1,
        "batches were committed after the lock was lost: {} then {}",
        at_kill,
        db.written_batches()
    );
    db.shadan(&["cutover", "--mapping", "mappings/retail.toml", "--resume"])
        .expect_code(0);
    db.assert_reference_copy_exact();
    db.shadan(&["verify", "--mapping", "mappings/retail.toml"])
        .expect_code(0);
}

#[test]
fn an_export_schema_or_view_of_another_role_is_refused() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 500);
    let neighbour = format!("squatter_{}", db.name);
    let role = format!("exporter_{}", db.name);
    // The neighbour creates the export schema before the DBA applies the script.
    db.source_sql(&format!(
        "CREATE ROLE {neighbour} LOGIN; GRANT CREATE ON DATABASE {} TO {neighbour}; \
         SET ROLE {neighbour}; CREATE SCHEMA shadan_export",
        db.name
    ));
    let script = db
        .shadan(&[
            "grants",
            "--mapping",
            "mappings/retail.toml",
            "--role",
            &role,
            "--views",
        ])
        .expect_code(0)
        .stdout
        .clone();
    let refused = db.source_sql_result(&script);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("belongs to another role")),
        "{refused:?}"
    );
    // Once the DBA drops it, the script applies; a view later handed to another role
    // (here by a careless DBA) is refused by plan.
    db.source_sql("DROP SCHEMA shadan_export CASCADE");
    db.source_sql(&script);
    let views = write_mapping(
        &db,
        &crate::support::reference_mapping().replace(
            "own_retailer = \"R0001\"",
            "own_retailer = \"R0001\"\nsource_access = \"views\"",
        ),
    );
    db.shadan_as(Some(&role), None, &["plan", "--mapping", s(&views)])
        .expect_code(0);
    db.source_sql(&format!(
        "ALTER VIEW shadan_export.\"joint.contracts\" OWNER TO {neighbour}"
    ));
    let run = db.shadan_as(Some(&role), None, &["plan", "--mapping", s(&views)]);
    run.expect_stderr(2, "owned by");
}

#[test]
fn an_export_view_left_on_a_table_renamed_away_is_refused() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    let role = format!("exporter_{}", db.name);
    let views = through_export_views(&db, &crate::support::reference_mapping(), &role);
    db.shadan_as(Some(&role), None, &["cutover", "--mapping", s(&views)])
        .expect_code(0);
    // A rebuilt table swapped in under the old name: the view still reads the old one.
    db.source_sql(
        "CREATE TABLE joint.contracts_new (LIKE joint.contracts INCLUDING ALL); \
         INSERT INTO joint.contracts_new SELECT * FROM joint.contracts WHERE contract_id % 2 = 0; \
         ALTER TABLE joint.contracts RENAME TO contracts_old; \
         ALTER TABLE joint.contracts_new RENAME TO contracts",
    );
    for command in ["sync", "verify"] {
        db.shadan_as(Some(&role), None, &[command, "--mapping", s(&views)])
            .expect_stderr(2, "contracts_old");
    }
}

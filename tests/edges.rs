//! Correct at the edges (issue 11): keys and constraints sync must honour exactly,
//! inherited tables, grants that must leave nothing readable, what `--deep` covers,
//! values plan must check, and stopping at once.

use crate::support::held::{self, wait_until, Held};
use crate::support::{reference_data, s, write_mapping, Run, TestDb};

/// A small table pair: `s.t` on the source (owner column `o`), `r.t` on the target.
const MAPPING: &str = r#"
[mapping]
name = "edges"
own_retailer = "R0001"

[[table]]
source = "s.t"
target = "r.t"
key = ["id"]
scope = "own"
owner = "o"

[table.columns]
id   = "public"
code = "public"
v    = "own"
o    = "non_public"
"#;

const EXPECTED: &str = "SELECT id, code, v FROM s.t WHERE o = 'R0001' ORDER BY id";
const ACTUAL: &str = "SELECT id, code, v FROM r.t ORDER BY id";

/// `s.t` with `n` rows (every fourth another retailer's) and `r.t` as given.
fn pair(target_ddl: &str, n: usize) -> TestDb {
    let db = TestDb::new();
    db.source_sql(&format!(
        "CREATE SCHEMA s; CREATE TABLE s.t (id int PRIMARY KEY, code text NOT NULL, v text, o text NOT NULL); \
         INSERT INTO s.t SELECT g, 'code-' || g, 'v' || g, CASE WHEN g % 4 = 0 THEN 'R0002' ELSE 'R0001' END \
         FROM generate_series(1, {n}) g"
    ));
    db.target_sql(&format!("CREATE SCHEMA r; {target_ddl}"));
    db
}

/// The reference schemas with `n` rows, copied by cutover.
fn copied(n: usize) -> TestDb {
    let db = TestDb::with_reference_schema();
    reference_data(&db, n);
    db.shadan(&["cutover", "--mapping", "mappings/retail.toml"])
        .expect_code(0);
    db
}

fn exact(db: &TestDb) {
    db.assert_same_rows(EXPECTED, ACTUAL, "r.t");
}

#[test]
fn a_unique_index_key_survives_a_failed_load_and_resume_refuses_another_projection() {
    let db = pair(
        "CREATE TABLE r.t (id int NOT NULL, code text NOT NULL, v text); \
         CREATE UNIQUE INDEX t_id ON r.t (id); \
         CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN IF NEW.id = 555 THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER boom BEFORE INSERT ON r.t FOR EACH ROW EXECUTE FUNCTION public.boom()",
        1000,
    );
    let path = write_mapping(&db, MAPPING);
    db.shadan(&[
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "100",
        "--jobs",
        "1",
    ])
    .expect_code(1);
    assert!(
        db.written_batches() > 0,
        "the test needs a half-done cutover"
    );
    db.target_sql("DROP TRIGGER boom ON r.t");
    // Another retailer's projection must not be resumed into this table.
    let other = write_mapping(
        &db,
        &MAPPING.replace("own_retailer = \"R0001\"", "own_retailer = \"R0002\""),
    );
    let run = db.shadan(&["cutover", "--mapping", s(&other), "--resume"]);
    run.expect_stderr(2, "another projection");
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["cutover", "--mapping", s(&path), "--resume"])
        .expect_code(0);
    exact(&db);
    assert_eq!(
        db.target_sql("SELECT count(*) FROM pg_indexes WHERE indexname = 't_id'"),
        "1"
    );
    db.source_sql("UPDATE s.t SET v = 'changed' WHERE id = 1");
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    exact(&db);
}

#[test]
fn a_trigger_that_skips_rows_fails_the_batch_instead_of_a_false_checkpoint() {
    let db = pair(
        "CREATE TABLE r.t (id int PRIMARY KEY, code text NOT NULL, v text)",
        300,
    );
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    db.target_sql(
        "CREATE FUNCTION public.skip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; \
         CREATE TRIGGER skip BEFORE UPDATE OR DELETE ON r.t FOR EACH ROW EXECUTE FUNCTION public.skip()",
    );
    db.source_sql("UPDATE s.t SET v = 'new' WHERE id = 1; DELETE FROM s.t WHERE id = 2");
    let run = db.shadan(&["sync", "--mapping", s(&path)]);
    run.expect_stderr(1, "triggers");
    db.target_sql("DROP TRIGGER skip ON r.t");
    // Triggers that still count every row: one rewrites an update, one removes an insert.
    db.target_sql(
        "CREATE FUNCTION public.forge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.v := 'forged'; RETURN NEW; END $$; \
         CREATE TRIGGER forge BEFORE UPDATE ON r.t FOR EACH ROW EXECUTE FUNCTION public.forge(); \
         CREATE FUNCTION public.drop_new() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN DELETE FROM r.t WHERE id = NEW.id; RETURN NULL; END $$; \
         CREATE TRIGGER drop_new AFTER INSERT ON r.t FOR EACH ROW EXECUTE FUNCTION public.drop_new()",
    );
    for change in [
        "UPDATE s.t SET v = 'newer' WHERE id = 5",
        "INSERT INTO s.t VALUES (1001, 'code-1001', 'v', 'R0001')",
    ] {
        db.source_sql(change);
        let run = db.shadan(&["sync", "--mapping", s(&path)]);
        run.expect_stderr(1, "trigger");
    }
    db.target_sql("DROP TRIGGER forge ON r.t; DROP TRIGGER drop_new ON r.t");
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    exact(&db);
}

#[test]
fn target_constraints_sync_cannot_keep_are_refused_and_deferrable_ones_are_kept() {
    // (Immediate unique and exclusion constraints besides the key: tests/unique.rs.)
    for (ddl, says) in [
        (
            "CREATE TABLE r.t (id int PRIMARY KEY, code text NOT NULL, v text, n int GENERATED ALWAYS AS IDENTITY)",
            "GENERATED ALWAYS",
        ),
        (
            "CREATE TABLE r.t (id int, code text NOT NULL, v text, PRIMARY KEY (id) DEFERRABLE)",
            "DEFERRABLE",
        ),
    ] {
        let db = pair(ddl, 10);
        db.source_sql("ALTER TABLE s.t ADD COLUMN n int NOT NULL DEFAULT 1");
        let path = write_mapping(&db, &format!("{MAPPING}n    = \"public\"\n"));
        let run = db.shadan(&["cutover", "--mapping", s(&path)]);
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{ddl}: {}", run.stderr);
    }
    // A key index with INCLUDE columns is still the key.
    let db = pair(
        "CREATE TABLE r.t (id int, code text NOT NULL, v text, PRIMARY KEY (id) INCLUDE (code))",
        50,
    );
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    exact(&db);
    // A deferrable second unique constraint and an identity key: values move between
    // rows, a deleted row's value is reused, and sync keeps both.
    let db = pair(
        "CREATE TABLE r.t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code text NOT NULL, v text, \
             CONSTRAINT t_code UNIQUE (code) DEFERRABLE INITIALLY IMMEDIATE)",
        400,
    );
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["cutover", "--mapping", s(&path), "--batch-rows", "100"])
        .expect_code(0);
    db.source_sql(
        "UPDATE s.t SET code = CASE id WHEN 1 THEN 'code-2' ELSE 'code-1' END WHERE id IN (1, 2); \
         DELETE FROM s.t WHERE id = 3; INSERT INTO s.t VALUES (1000, 'code-3', 'reused', 'R0001')",
    );
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    exact(&db);
}

#[test]
fn an_invalid_unique_index_is_not_a_key() {
    let db = pair(
        "CREATE TABLE r.t (id int NOT NULL, code text NOT NULL, v text)",
        10,
    );
    db.target_sql("INSERT INTO r.t VALUES (1, 'a', 'x'), (1, 'b', 'y')");
    // A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index behind.
    assert!(db
        .target_cluster
        .psql_status(
            &db.name,
            "CREATE UNIQUE INDEX CONCURRENTLY t_id ON r.t (id)"
        )
        .is_err());
    db.target_sql("DELETE FROM r.t");
    let path = write_mapping(&db, MAPPING);
    let run = db.shadan(&["cutover", "--mapping", s(&path)]);
    run.expect_stderr(2, "no primary key or unique index");
}

#[test]
fn inheritance_children_are_not_read_on_the_source_and_are_audited_on_the_target() {
    let db = pair(
        "CREATE TABLE r.t (id int PRIMARY KEY, code text NOT NULL, v text)",
        100,
    );
    // Rows of a child on the source: listed as not replicated, so never copied.
    db.source_sql(
        "CREATE TABLE s.t_child (secret text) INHERITS (s.t); \
         INSERT INTO s.t_child VALUES (5000, 'child', 'hidden', 'R0001', 'x')",
    );
    let path = write_mapping(&db, MAPPING);
    let plan = db.shadan(&["plan", "--mapping", s(&path)]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("s.t_child"), "{}", plan.stdout);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    assert_eq!(
        db.target_sql("SELECT count(*) FROM r.t WHERE id = 5000"),
        "0"
    );
    db.source_sql("DELETE FROM ONLY s.t_child");
    exact(&db);
    // On the target, rows moved into a child with a column of its own are a leak, and the
    // writing commands refuse the table.
    db.target_sql(
        "CREATE TABLE r.t_side (wheeling text) INHERITS (r.t); \
         INSERT INTO r.t_side VALUES (7000, 'side', 'x', 'WC-0000-SECRET')",
    );
    let run = db.shadan(&["verify", "--mapping", s(&path), "--json"]);
    run.expect_code(4);
    let report = run.json();
    assert!(
        report["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["kind"] == "column" && l["table"] == "r.t_side"),
        "{}",
        run.stdout
    );
    let run = db.shadan(&["sync", "--mapping", s(&path)]);
    run.expect_stderr(2, "inheritance child");
}

#[test]
fn the_owner_column_can_never_cross() {
    let db = pair(
        "CREATE TABLE r.t (id int PRIMARY KEY, code text NOT NULL, v text, o text)",
        10,
    );
    for class in ["public", "own"] {
        let path = write_mapping(
            &db,
            &MAPPING.replace("o    = \"non_public\"", &format!("o    = \"{class}\"")),
        );
        let run = db.shadan(&["plan", "--mapping", s(&path)]);
        run.expect_stderr(2, "owner column");
    }
}

#[test]
fn the_grants_script_stops_when_the_role_could_read_more_through_public_or_a_membership() {
    let db = TestDb::with_reference_schema();
    let role = format!("reader_{}", db.name);
    let script = db
        .shadan(&[
            "grants",
            "--mapping",
            "mappings/retail.toml",
            "--role",
            &role,
        ])
        .expect_code(0)
        .stdout
        .clone();
    db.source_sql("GRANT SELECT (wheeling_contract_no) ON joint.contracts TO PUBLIC");
    let refused = db.source_sql_result(&script).unwrap_err();
    assert!(refused.contains("wheeling_contract_no"), "{refused}");
    db.source_sql("REVOKE SELECT (wheeling_contract_no) ON joint.contracts FROM PUBLIC");
    let club = format!("club_{}", db.name);
    db.source_sql(&format!(
        "CREATE ROLE {club}; CREATE ROLE {role} LOGIN BYPASSRLS; GRANT {club} TO {role}"
    ));
    let refused = db.source_sql_result(&script).unwrap_err();
    assert!(refused.contains(&club), "{refused}");
    db.source_sql(&format!("REVOKE {club} FROM {role}"));
    // A SECURITY DEFINER function anyone may run, and a copy in another schema that
    // PUBLIC may read: both open non-public data to the role.
    db.source_sql(
        "CREATE FUNCTION joint.detail(bigint) RETURNS text LANGUAGE sql SECURITY DEFINER \
         AS 'SELECT wheeling_contract_no FROM joint.contracts WHERE contract_id = $1'",
    );
    let refused = db.source_sql_result(&script).unwrap_err();
    assert!(
        refused.contains("SECURITY DEFINER") && refused.contains("detail"),
        "{refused}"
    );
    db.source_sql("REVOKE EXECUTE ON FUNCTION joint.detail(bigint) FROM PUBLIC");
    db.source_sql(
        "CREATE SCHEMA archive; GRANT USAGE ON SCHEMA archive TO PUBLIC; \
         CREATE TABLE archive.old AS SELECT contract_id, wheeling_contract_no FROM joint.contracts; \
         GRANT SELECT ON archive.old TO PUBLIC",
    );
    let refused = db.source_sql_result(&script).unwrap_err();
    assert!(
        refused.contains("archive.old.wheeling_contract_no"),
        "{refused}"
    );
    db.source_sql("REVOKE SELECT ON archive.old FROM PUBLIC");
    db.source_sql(&script);
    assert_eq!(
        db.source_sql(&format!(
            "SELECT rolbypassrls OR rolinherit FROM pg_roles WHERE rolname = '{role}'"
        )),
        "f"
    );
}

#[test]
fn deep_finds_secrets_in_json_arrays_and_bytea_and_with_spaces_around_them() {
    let db = copied(300);
    let secret = db.source_sql(
        "SELECT wheeling_contract_no FROM joint.contracts WHERE wheeling_contract_no IS NOT NULL ORDER BY 1 LIMIT 1",
    );
    assert!(secret.len() >= 6);
    // Stored on the source with spaces around it; copied plainly into other column types.
    db.source_sql(&format!(
        "UPDATE joint.contracts SET wheeling_contract_no = '  ' || wheeling_contract_no || ' ' \
         WHERE wheeling_contract_no = '{secret}'"
    ));
    db.target_sql(&format!(
        "ALTER TABLE retail.contracts ADD COLUMN j jsonb, ADD COLUMN a text[], ADD COLUMN b bytea, \
             ADD COLUMN js json, ADD COLUMN x xml; \
         UPDATE retail.contracts SET j = jsonb_build_object('note', '{secret}'), a = ARRAY['x', '{secret}'], \
             b = convert_to('{secret}。', 'UTF8'), \
             js = ('{{\"n\": \"' || (SELECT string_agg(format('\\u%s', lpad(to_hex(ascii(ch)), 4, '0')), '') \
                   FROM regexp_split_to_table('{secret}', '') ch) || '\"}}')::json, \
             x = ('<a>' || (SELECT string_agg('&#' || ascii(ch) || ';', '') FROM regexp_split_to_table('{secret}', '') ch) || '</a>')::xml \
         WHERE contract_id = (SELECT min(contract_id) FROM retail.contracts)"
    ));
    let run = db.shadan(&[
        "verify",
        "--mapping",
        "mappings/retail.toml",
        "--deep",
        "--json",
    ]);
    run.expect_code(4);
    let report = run.json();
    for column in ["j", "a", "b", "js", "x"] {
        assert!(
            report["leaks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["kind"] == "value" && l["column"] == column),
            "{column}: {}",
            run.stdout
        );
    }
    assert!(!run.all_output().contains(&secret));
}

#[test]
fn a_verified_report_says_what_it_checked() {
    let db = copied(200);
    let plain = db.shadan(&["verify", "--mapping", "mappings/retail.toml"]);
    plain.expect_code(0);
    assert!(
        plain.stdout.contains("run with --deep") && !plain.stdout.contains("holds nothing else")
    );
    let deep = db.shadan(&["verify", "--mapping", "mappings/retail.toml", "--deep"]);
    deep.expect_code(0);
    assert!(
        deep.stdout.contains("no non-public text value"),
        "{}",
        deep.stdout
    );
}

#[test]
fn values_that_are_not_of_their_column_type_stop_plan_naming_their_position() {
    let db = pair(
        "CREATE TABLE r.t (id int PRIMARY KEY, code text NOT NULL, v text)",
        10,
    );
    let path = write_mapping(
        &db,
        &MAPPING.replace("owner = \"o\"", "owner = \"o\"\nonly = { id = [1, 2.5] }"),
    );
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "number 2 of 2");
    db.source_sql("ALTER TABLE s.t ADD COLUMN tags text[]");
    let path = write_mapping(
        &db,
        &format!(
            "{}tags = \"non_public\"\n",
            MAPPING.replace(
                "owner = \"o\"",
                "owner = \"o\"\nonly = { tags = [\"{a}\"] }"
            )
        ),
    );
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "not supported");
    db.source_sql("ALTER TABLE s.t DROP COLUMN tags");
    let path = write_mapping(
        &db,
        &MAPPING.replace(
            "own_retailer = \"R0001\"",
            "own_retailer = \"R0001\\u0000x\"",
        ),
    );
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "own_retailer");
}

/// Starts a cutover of the reference mapping with `args`, waits until the target shows it
/// waiting on a lock (`waiting` counts such sessions), signals it twice, and checks that
/// it stops at once (exit 1) and that nothing of it is left running on the target.
fn two_signals_stop(db: &TestDb, args: &[&str], signal: &str, waiting: &str) {
    let mut cmd = vec!["cutover", "--mapping", "mappings/retail.toml"];
    cmd.extend_from_slice(args);
    let mut child = db
        .command(&cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(30, "the cutover never waited on the lock", || {
        db.target_sql(waiting) != "0"
    });
    held::signal(&child, signal, 2);
    wait_until(15, "two signals did not stop the cutover", || {
        child.try_wait().unwrap().is_some()
    });
    Run::from(child.wait_with_output().unwrap()).expect_code(1);
    wait_until(
        5,
        "the cutover's statement still runs on the target",
        || db.target_sql(waiting) == "0",
    );
}

#[test]
fn a_second_signal_stops_a_run_waiting_on_a_lock_at_once() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    let holder = Held::open(
        &db.target_url(),
        "BEGIN; LOCK TABLE retail.contracts IN ACCESS EXCLUSIVE MODE;",
    );
    let waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'retail.contracts'::regclass AND NOT granted";
    two_signals_stop(&db, &[], "TERM", waiting);
    assert!(holder.end("COMMIT;"));
}

#[test]
fn a_second_signal_cancels_a_copy_waiting_on_a_row_lock() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 3000);
    // Another session has inserted (not committed) a key the cutover will copy.
    let id = db.source_sql(
        "SELECT min(contract_id) FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail'",
    );
    let holder = Held::open(
        &db.target_url(),
        &format!(
            "BEGIN; INSERT INTO retail.contracts (contract_id, supply_point_id, night_equipment, start_date) \
             VALUES ({id}, '0', false, '2020-01-01');"
        ),
    );
    let copying = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%retail%contracts%FROM STDIN%' \
                   AND wait_event_type = 'Lock'";
    two_signals_stop(&db, &["--keep-indexes", "--jobs", "1"], "INT", copying);
    assert!(holder.end("ROLLBACK;"));
}

#[test]
fn another_mappings_unfinished_cutover_does_not_stop_this_sync() {
    let db = copied(200);
    db.target_sql(
        "INSERT INTO shadan.deferred_indexes VALUES ('other.table', 0, 'SELECT 1', NULL)",
    );
    db.shadan(&["sync", "--mapping", "mappings/retail.toml"])
        .expect_code(0);
}

#[test]
fn deep_trims_an_ideographic_space_from_secrets_as_from_target_values() {
    let db = copied(300);
    // A legacy fixed-width value padded with U+3000 on the source, copied trimmed.
    db.source_sql(
        "UPDATE joint.contracts SET wheeling_contract_no = 'WC778899AABBCC' || U&'\\3000' \
         WHERE contract_id = (SELECT min(contract_id) FROM joint.contracts WHERE retailer_code <> 'R0001')",
    );
    db.target_sql(
        "UPDATE retail.supply_points SET address = address || ' WC778899AABBCC' \
         WHERE supply_point_id = (SELECT min(supply_point_id) FROM retail.supply_points)",
    );
    let run = db.shadan(&[
        "verify",
        "--mapping",
        "mappings/retail.toml",
        "--deep",
        "--json",
    ]);
    run.expect_code(4);
    assert_eq!(run.json()["leaks"][0]["kind"], "value", "{}", run.stdout);
}

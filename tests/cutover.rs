//! `shadan cutover`: the target ends equal to the projection computed independently on
//! the source, from one snapshot, and a crash, a lost connection or a rerun never leaves
//! duplicates or gaps.

use std::process::Stdio;

use crate::support::{reference_data, s, write_mapping, Run, TestDb};

const MAPPING: &str = "mappings/retail.toml";

#[test]
fn cutover_copies_exactly_the_permitted_projection_and_records_a_manifest() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 3000);
    let run = db.shadan(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--jobs",
        "2",
        "--batch-rows",
        "400",
        "--json",
    ]);
    run.expect_code(0);
    db.assert_reference_copy_exact();

    // Other retailers' contracts, last-resort and FIT customers are absent.
    let excluded = db.source_sql(
        "SELECT string_agg(contract_id::text, ',') FROM joint.contracts WHERE retailer_code <> 'R0001' OR supply_kind <> 'retail'",
    );
    let excluded_count = excluded.split(',').count();
    assert!(excluded_count > 500, "test data has excluded rows");
    let leaked = db.target_sql(&format!(
        "SELECT count(*) FROM retail.contracts WHERE contract_id IN ({excluded})"
    ));
    assert_eq!(leaked, "0");

    let manifest = run.json();
    let contracts = &manifest["tables"][1];
    assert_eq!(contracts["target"], "retail.contracts");
    assert_eq!(
        contracts["rows"].to_string(),
        db.target_sql("SELECT count(*) FROM retail.contracts")
    );
    assert_eq!(contracts["blake3"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["mapping"]["name"], "retail-split");
    assert_eq!(manifest["resumed"], false);
    assert!(manifest["source_snapshot"]["id"].as_str().unwrap().len() > 5);
    assert_eq!(
        db.target_sql(
            "SELECT status || ' ' || (manifest->'tables'->1->>'blake3') FROM shadan.runs"
        ),
        format!("done {}", contracts["blake3"].as_str().unwrap())
    );
}

#[test]
fn nulls_empty_strings_japanese_text_numeric_scale_dates_and_times_survive_byte_for_byte() {
    let db = TestDb::new();
    let ddl =
        "CREATE SCHEMA s; CREATE TABLE s.t (id int PRIMARY KEY, t text, v varchar(10), c char(6), \
        n81 numeric(8,1), n numeric, d date, ts timestamptz, tsl timestamp, b bytea, flag boolean, \
        arr int[], tarr text[], js jsonb, u uuid, iv interval, f8 float8, f4 real)";
    db.source_sql(ddl);
    db.target_sql(ddl);
    db.source_sql(
        r#"INSERT INTO s.t VALUES
        (1, '', '', '', 1.0, 1.500, '2024-02-29', '2024-03-31 23:59:59.999999+09', '2000-01-01 00:00:00', '\x00ff', true,
         '{1,NULL,3}', '{"東北","a,b",""}', '{"k": "値", "n": 1.50}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 year 2 mons 3 days 04:05:06.7', 'NaN', '-0'),
        (2, '東北電力 ☃ 𠮷野家', 'ｶﾅ', 'ab', -9999999.9, 0.000000000000000001, 'infinity', '-infinity', '1999-12-31 23:59:59.5', '', false,
         '{}', '{}', '[]', NULL, '-1 day', 1e308, 3.4e38),
        (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (4, E'tab\there\nnewline \\ backslash', 'x', 'x', 0, -0, '0001-01-01 BC', '1970-01-01 00:00:00+00', '294276-12-31 23:59:59', '\x', true,
         '{-2147483648}', '{NULL}', 'null', '00000000-0000-0000-0000-000000000000', '0', 'Infinity', 1.17549435e-38)"#,
    );
    let cols = [
        "id", "t", "v", "c", "n81", "n", "d", "ts", "tsl", "b", "flag", "arr", "tarr", "js", "u",
        "iv", "f8", "f4",
    ];
    let mapping = format!(
        "[mapping]\nname = \"types\"\nown_retailer = \"R0001\"\n\n[[table]]\nsource = \"s.t\"\ntarget = \"s.t\"\nkey = [\"id\"]\nscope = \"all\"\n\n[table.columns]\n{}\n",
        cols.iter().map(|c| format!("{c} = \"public\"")).collect::<Vec<_>>().join("\n")
    );
    let path = write_mapping(&db, &mapping);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    let select = "SELECT * FROM s.t ORDER BY id";
    assert_eq!(db.source_rows(select), db.target_rows(select));
    let binary_md5 = "SELECT md5(string_agg(t::text || coalesce(n::text,'') || coalesce(n81::text,''), '|' ORDER BY id)) FROM s.t";
    assert_eq!(db.source_sql(binary_md5), db.target_sql(binary_md5));
    assert_eq!(
        db.target_sql("SELECT n::text || ' ' || n81::text FROM s.t WHERE id = 1"),
        "1.500 1.0",
        "numeric scale kept"
    );
}

#[test]
fn killed_mid_copy_then_resume_copies_every_row_exactly_once() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 20_000);
    db.cutover_killed_after(20, &["--jobs", "2", "--batch-rows", "100"]);
    let total: usize = db
        .target_sql("SELECT count(*) FROM shadan.batches")
        .parse()
        .unwrap();
    let written = db.written_batches();
    assert!(
        written < total,
        "killed mid-copy: {written} of {total} batches written"
    );
    // Every written batch holds exactly its rows: target rows equal checkpointed rows.
    assert_eq!(
        db.target_sql("SELECT (SELECT count(*) FROM retail.contracts) + (SELECT count(*) FROM retail.supply_points)"),
        db.target_sql("SELECT coalesce(sum(rows), 0) FROM shadan.batches")
    );

    let before = db.target_sql(
        "SELECT coalesce(sum(rows), 0) FROM shadan.batches WHERE target_table = 'retail.contracts'",
    );
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(2);
    let run = db.shadan(&["cutover", "--mapping", MAPPING, "--resume", "--json"]);
    run.expect_code(0);
    db.assert_reference_copy_exact();
    assert_eq!(run.json()["resumed"], true);
    // Progress counts the rows of earlier runs as done, and only this run's in its rate.
    let total = db.target_sql("SELECT count(*) FROM retail.contracts");
    let this_run = total.parse::<u64>().unwrap() - before.parse::<u64>().unwrap();
    let last = run
        .stderr
        .lines()
        .rfind(|l| l.starts_with("shadan cutover: retail.contracts "))
        .unwrap_or_else(|| panic!("no progress line:\n{}", run.stderr));
    assert!(
        last.starts_with(&format!("shadan cutover: retail.contracts {total}/"))
            && last.contains(&format!(" ({this_run} this run, ")),
        "{last}"
    );
    assert_eq!(
        db.target_sql("SELECT count(*) FROM shadan.batches WHERE rows IS NULL"),
        "0"
    );
}

#[test]
fn a_terminated_target_connection_exits_1_and_resume_completes() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 20_000);
    let mut child = db
        .command(&[
            "cutover",
            "--mapping",
            MAPPING,
            "--jobs",
            "2",
            "--batch-rows",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.wait_for_batches(&mut child, 10);
    db.target_sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'shadan' AND datname = current_database()",
    );
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_stderr(1, "shadan: ");
    assert!(
        run.stderr.contains("retail.") || run.stderr.contains("target"),
        "the message names what was being written: {}",
        run.stderr
    );
    db.shadan(&["cutover", "--mapping", MAPPING, "--resume"])
        .expect_code(0);
    db.assert_reference_copy_exact();
}

#[test]
fn a_second_concurrent_run_is_refused() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 20_000);
    let mut first = db.spawn_quiet(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--jobs",
        "1",
        "--batch-rows",
        "50",
    ]);
    db.wait_for_batches(&mut first, 3);
    let second = db.shadan(&["cutover", "--mapping", MAPPING, "--resume"]);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run was still running"
    );
    second.expect_code(1);
    assert!(
        second
            .stderr
            .contains("another shadan cutover or sync is running against the target"),
        "{}",
        second.stderr
    );
    assert_eq!(first.wait().unwrap().code(), Some(0));
    db.assert_reference_copy_exact();
}

#[test]
fn a_non_empty_target_is_refused_and_nothing_is_written() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 500);
    db.target_sql("INSERT INTO retail.contracts (contract_id, supply_point_id, night_equipment, start_date) VALUES (1, 'x', false, '2020-01-01')");
    let run = db.shadan(&["cutover", "--mapping", MAPPING]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("target table retail.contracts is not empty"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.target_sql("SELECT count(*) FROM retail.supply_points"),
        "0",
        "nothing written"
    );
    assert_eq!(db.target_sql("SELECT count(*) FROM retail.contracts"), "1");
    let resumed = db.shadan(&["cutover", "--mapping", MAPPING, "--resume"]);
    resumed.expect_code(2);
}

#[test]
fn rows_committed_during_the_copy_are_in_every_table_or_in_none() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 10_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = db.source_url();
    let flag = stop.clone();
    // A writer commits a new supply point and its contract together, over and over.
    let writer = std::thread::spawn(move || {
        let mut i = 5_000_000u64;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            let sql = format!(
                "BEGIN; INSERT INTO joint.supply_points VALUES ('9{i:021}', 'addr', '980-0001', 'low', 'x', NULL, now()); \
                 INSERT INTO joint.contracts (contract_id, supply_point_id, holder_name, retailer_code, supply_kind, start_date) \
                 VALUES ({i}, '9{i:021}', 'n', 'R0001', 'retail', '2026-01-01'); COMMIT;"
            );
            let ok = std::process::Command::new(crate::support::cluster::pg_bin().join("psql"))
                .args(["-X", "-q", "-d", &url, "-c", &sql])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(ok, "writer insert failed");
        }
        i - 5_000_000
    });
    while db
        .source_sql("SELECT count(*) FROM joint.contracts WHERE contract_id > 5000000")
        .parse::<u64>()
        .unwrap()
        < 3
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = db.shadan(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--jobs",
        "2",
        "--batch-rows",
        "200",
    ]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let inserted = writer.join().unwrap();
    run.expect_code(0);
    let sp = db.target_sql("SELECT string_agg(substr(supply_point_id, 2)::bigint::text, ',' ORDER BY supply_point_id) FROM retail.supply_points WHERE supply_point_id LIKE '9%'");
    let ct = db.target_sql("SELECT string_agg(contract_id::text, ',' ORDER BY contract_id) FROM retail.contracts WHERE contract_id > 5000000");
    assert_eq!(sp, ct, "each pair is in both tables or in neither");
    let copied = ct.split(',').count() as u64;
    assert!(
        copied >= 3,
        "pairs committed before the snapshot are copied"
    );
    assert!(copied <= inserted);
}

#[test]
fn table_option_copies_only_the_named_table() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 500);
    db.shadan(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--table",
        "retail.supply_points",
    ])
    .expect_code(0);
    assert_eq!(
        db.target_sql("SELECT count(*) FROM retail.supply_points"),
        "500"
    );
    assert_eq!(db.target_sql("SELECT count(*) FROM retail.contracts"), "0");
    db.shadan(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--table",
        "joint.contracts",
    ])
    .expect_code(0);
    db.assert_reference_copy_exact();
    let unknown = db.shadan(&["cutover", "--mapping", MAPPING, "--table", "joint.nope"]);
    unknown.expect_stderr(2, "--table joint.nope");
}

#[test]
fn hostile_identifiers_and_values_are_copied_as_data() {
    let db = TestDb::new();
    let ddl = r#"CREATE SCHEMA "Grid.Ops"; CREATE TABLE "Grid.Ops"."a""; drop table x; --" ("ID" int PRIMARY KEY, "select" text, "Owner" text NOT NULL, "Secret" text)"#;
    db.source_sql(ddl);
    db.target_sql(r#"CREATE SCHEMA "Retail"; CREATE TABLE "Retail"."Order" ("ID" int PRIMARY KEY, "select" text)"#);
    db.source_sql(r#"INSERT INTO "Grid.Ops"."a""; drop table x; --" VALUES (1, 'mine', 'R''; --', 's1'), (2, 'theirs', 'R0002', 's2')"#);
    let mapping = r#"
[mapping]
name = "hostile"
own_retailer = "R'; --"

[[table]]
source = '"Grid.Ops"."a""; drop table x; --"'
target = "Retail.Order"
key = ["ID"]
scope = "own"
owner = "Owner"

[table.columns]
ID = "public"
select = "own"
Owner = "non_public"
Secret = "non_public"
"#;
    let path = write_mapping(&db, mapping);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    assert_eq!(
        db.target_rows(r#"SELECT * FROM "Retail"."Order""#),
        "1\tmine"
    );
}

#[test]
fn tables_named_in_any_order_are_each_laid_out_and_copied() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 1500);
    let run = db.shadan(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--batch-rows",
        "300",
        "--table",
        "retail.contracts",
        "--table",
        "joint.supply_points",
    ]);
    run.expect_code(0);
    db.assert_reference_copy_exact();
    let layouts = db.target_sql("SELECT string_agg(target_table || ':' || count, ',' ORDER BY target_table) FROM (SELECT target_table, count(*) FROM shadan.batches GROUP BY 1) b");
    assert_eq!(
        layouts, "retail.contracts:4,retail.supply_points:6",
        "each table has its own layout"
    );
}

#[test]
fn batches_cut_from_a_sample_follow_key_order_not_text_order() {
    // 3,000 rows in 60 batches: large enough that cut points come from a block sample;
    // contract ids sort differently as text ("10" < "9"), which must not matter.
    let db = TestDb::with_reference_schema();
    reference_data(&db, 3000);
    db.source_sql("ANALYZE");
    db.shadan(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--batch-rows",
        "50",
        "--jobs",
        "2",
    ])
    .expect_code(0);
    db.assert_reference_copy_exact();
    let ordered = db.target_sql(
        "SELECT bool_and(upper_key[1]::bigint > coalesce(lower_key[1]::bigint, 0)) FROM shadan.batches \
         WHERE target_table = 'retail.contracts' AND upper_key IS NOT NULL",
    );
    assert_eq!(ordered, "t", "every batch range is non-empty in key order");
}

/// The target's index and key definitions, to compare before and after a cutover.
fn index_definitions(db: &TestDb) -> String {
    db.target_sql(
        "SELECT string_agg(indexdef, E'\\n' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'retail'",
    )
}

#[test]
fn indexes_set_aside_for_the_load_are_rebuilt_identically_even_after_a_crash() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 20_000);
    let before = index_definitions(&db);
    db.cutover_killed_after(20, &["--jobs", "2", "--batch-rows", "100"]);
    assert_ne!(
        index_definitions(&db),
        before,
        "the load ran without the indexes"
    );
    assert!(
        db.target_sql("SELECT count(*) FROM shadan.deferred_indexes")
            .parse::<u32>()
            .unwrap()
            >= 3
    );

    let sync = db.shadan(&["sync", "--mapping", MAPPING]);
    sync.expect_code(2);
    assert!(
        sync.stderr.contains("has not finished") && sync.stderr.contains("cutover --resume"),
        "{}",
        sync.stderr
    );

    db.shadan(&["cutover", "--mapping", MAPPING, "--resume"])
        .expect_code(0);
    assert_eq!(
        index_definitions(&db),
        before,
        "primary keys and indexes rebuilt as they were"
    );
    assert_eq!(
        db.target_sql("SELECT count(*) FROM shadan.deferred_indexes"),
        "0"
    );
    db.assert_reference_copy_exact();
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
}

#[test]
fn keep_indexes_loads_with_the_indexes_in_place_and_referenced_tables_are_left_alone() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 20_000);
    let before = index_definitions(&db);
    let mut child = db.spawn_quiet(&[
        "cutover",
        "--mapping",
        MAPPING,
        "--batch-rows",
        "100",
        "--keep-indexes",
    ]);
    db.wait_for_batches(&mut child, 10);
    assert_eq!(
        index_definitions(&db),
        before,
        "indexes stay during a --keep-indexes load"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    db.shadan(&["cutover", "--mapping", MAPPING, "--resume"])
        .expect_code(0);
    db.assert_reference_copy_exact();

    // A target table referenced by a foreign key keeps its key during the load.
    let db = TestDb::with_reference_schema();
    reference_data(&db, 500);
    db.target_sql("CREATE TABLE retail.visits (id int PRIMARY KEY, supply_point_id char(22) REFERENCES retail.supply_points)");
    let run = db.shadan(&["cutover", "--mapping", MAPPING]);
    run.expect_code(0);
    assert_eq!(
        index_definitions(&db).lines().count(),
        before.lines().count() + 1
    );
    db.assert_reference_copy_exact();
}

//! Two servers set up differently: batch ranges must select exactly the same keys on both
//! sides whatever their collations, and keys whose `=` is not byte equality are refused.
//! Two servers set up alike with a locale (C.UTF-8, ICU ja-JP): ranges in the collation
//! they share, so that each side's own key index serves every batch. Set up differently,
//! with no index serving byte-order ranges: the source reads a stretch of batches per
//! scan, never one scan per batch.

use crate::support::{s, write_mapping, TestDb};

/// ICU en-US as a database's default collation.
const ICU_EN_US: &str = "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'";

/// Recreates this test's database on one cluster with the given locale options.
fn recreate(db: &TestDb, source: bool, locale: &str) {
    let cluster = if source {
        db.source_cluster
    } else {
        db.target_cluster
    };
    cluster.psql("postgres", &format!("DROP DATABASE {}", db.name));
    cluster.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' {locale}",
            db.name
        ),
    );
}

/// Sequential and index scans of the source table since its counters were reset, once
/// the statistics settled.
fn source_scans(db: &TestDb) -> (i64, i64) {
    let read = || {
        db.source_sql(
            "SELECT seq_scan || ' ' || coalesce(idx_scan, 0) FROM pg_stat_user_tables \
             WHERE schemaname = 's' AND relname = 'acct'",
        )
    };
    let mut last = read();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(600));
        let now = read();
        if now == last {
            // No row yet: the table does not exist, so nothing scanned it.
            let mut n = now.split(' ').map(|x| x.parse::<i64>().unwrap_or(0));
            return (n.next().unwrap_or(0), n.next().unwrap_or(0));
        }
        last = now;
    }
}

const MAPPING: &str = r#"
[mapping]
name = "collations"
own_retailer = "R0001"

[[table]]
source = "s.acct"
target = "r.acct"
key = ["k", "sub"]
scope = "own"
owner = "owner_code"

[table.columns]
k          = "public"
sub        = "public"
v          = "own"
owner_code = "non_public"
"#;

/// Keys that sort very differently under ICU and under C: case, punctuation, spaces,
/// accents, digits.
const KEY: &str = "(ARRAY['a','B','c','D','_','-',' ','é','Z','0'])[g % 10 + 1] \
    || pg_catalog.lpad(((g * 7919) % 40000)::text, 5, '0') || (ARRAY['x','Y','-z',' q'])[g % 4 + 1]";

const EXPECTED: &str = "SELECT k, sub, v FROM s.acct WHERE owner_code = 'R0001' ORDER BY k COLLATE \"C\", sub COLLATE \"C\"";
const ACTUAL: &str = "SELECT k, sub, v FROM r.acct ORDER BY k COLLATE \"C\", sub COLLATE \"C\"";

/// Cutover, then a sync of updates, moves in and out of the scope, deletes and inserts;
/// the target must equal the projection after each, and verify must agree.
fn split_and_sync(db: &TestDb, target_key_collation: &str, source_icu: bool) {
    let path = create_and_cutover(db, target_key_collation, source_icu);
    night_and_relayout(db, &path);
}

/// The source table of `rows` generated keys (fewer where they repeat), a third of them
/// another retailer's.
fn source_accounts(db: &TestDb, rows: u32) {
    db.source_sql(&format!(
        "CREATE SCHEMA s; CREATE TABLE s.acct (k text, sub char(2), owner_code text NOT NULL, v text, \
             PRIMARY KEY (k, sub)); \
         INSERT INTO s.acct SELECT {KEY}, (ARRAY['a ','B ','aa'])[g % 3 + 1], \
             CASE WHEN g % 3 = 0 THEN 'R0002' ELSE 'R0001' END, 'v' || g \
         FROM generate_series(1, {rows}) g ON CONFLICT DO NOTHING"
    ));
}

/// Creates the tables, checks what `plan` and `grants` say, and runs the cutover.
fn create_and_cutover(
    db: &TestDb,
    target_key_collation: &str,
    source_icu: bool,
) -> std::path::PathBuf {
    source_accounts(db, 20000);
    db.target_sql(&format!(
        "CREATE SCHEMA r; CREATE TABLE r.acct (k text {target_key_collation}, sub char(2), v text, PRIMARY KEY (k, sub))"
    ));
    // The statistics from here on count what shadan does.
    db.source_sql("SELECT pg_stat_reset_single_table_counters('s.acct'::regclass)");
    let path = write_mapping(db, MAPPING);
    let plan = db.shadan(&["plan", "--mapping", s(&path)]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("key order"), "{}", plan.stdout);
    // No index is asked of either DBA.
    let grants = db.shadan(&["grants", "--mapping", s(&path)]);
    assert!(
        !grants.expect_code(0).stdout.contains("CREATE INDEX"),
        "{}",
        grants.stdout
    );
    db.shadan(&[
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "500",
        "--jobs",
        "2",
    ])
    .expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after cutover");
    let batches: i64 = db
        .target_sql("SELECT count(*) FROM shadan.batches")
        .parse()
        .unwrap_or(0);
    assert!(batches >= 20, "{batches} batches");
    if source_icu {
        // No source index serves byte-order ranges: the batches were read a stretch per
        // worker, not one scan each.
        let (seq, _) = source_scans(db);
        assert!(seq <= 6, "{seq} sequential scans for {batches} batches");
        // In full and in a dry run alike.
        db.source_sql("SELECT pg_stat_reset_single_table_counters('s.acct'::regclass)");
        for run in [&["sync", "--full"][..], &["sync", "--dry-run"][..]] {
            let mut args = run.to_vec();
            args.extend(["--mapping", s(&path)]);
            db.shadan(&args).expect_code(0);
        }
        let (seq, _) = source_scans(db);
        assert!(
            seq <= 8,
            "{seq} sequential scans for two reads of {batches} batches"
        );
        // A stretch whose last batch lost every row: it is read empty (the dry run and
        // the full path alike), and its target rows deleted.
        let last = db.target_sql(
            "SELECT lower_key[1] || E'\\t' || lower_key[2] FROM shadan.batches WHERE upper_key IS NULL",
        );
        let (k, sub) = last.split_once('\t').expect("the last batch's lower bound");
        db.source_sql(&format!(
            "DELETE FROM s.acct WHERE (k COLLATE \"C\", sub COLLATE \"C\") > ('{}', '{}')",
            k.replace('\'', "''"),
            sub.replace('\'', "''")
        ));
        let dry = db.shadan(&["sync", "--dry-run", "--mapping", s(&path)]);
        assert!(
            dry.expect_code(0).stdout.contains(" delete "),
            "{}",
            dry.stdout
        );
        db.shadan(&["sync", "--full", "--mapping", s(&path)])
            .expect_code(0);
        db.assert_same_rows(EXPECTED, ACTUAL, "after the last batch emptied");
    }
    path
}

/// A night of every kind of change, synced; then a layout of another key order redone.
fn night_and_relayout(db: &TestDb, path: &std::path::Path) {
    db.source_sql(
        "UPDATE s.acct SET v = v || '+' WHERE pg_catalog.hashtext(k) % 10 = 0; \
         UPDATE s.acct SET owner_code = CASE owner_code WHEN 'R0001' THEN 'R0002' ELSE 'R0001' END \
             WHERE pg_catalog.hashtext(k || sub) % 17 = 0; \
         DELETE FROM s.acct WHERE pg_catalog.hashtext(sub || k) % 19 = 0; \
         INSERT INTO s.acct SELECT 'new ' || g || (ARRAY['A','b','_'])[g % 3 + 1], 'a ', 'R0001', 'n' || g \
             FROM generate_series(1, 1000) g",
    );
    let run = db.shadan(&["sync", "--mapping", s(path), "--json"]);
    run.expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after sync");
    db.shadan(&["verify", "--mapping", s(path)]).expect_code(0);
    // A second sync finds nothing to do.
    db.shadan(&["sync", "--mapping", s(path)]).expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after a rerun");

    // A layout an older shadan cut under the servers' collations is laid out anew.
    db.target_sql("UPDATE shadan.batches SET key_order = NULL");
    db.source_sql("DELETE FROM s.acct WHERE pg_catalog.hashtext(k) % 23 = 0");
    db.shadan(&["sync", "--mapping", s(path)]).expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after a relayout");
    assert_eq!(
        db.target_sql("SELECT count(*) FROM shadan.batches WHERE key_order IS NULL"),
        "0"
    );
}

#[test]
fn an_icu_source_and_a_c_target_sync_every_key_exactly() {
    let db = TestDb::new();
    recreate(&db, true, ICU_EN_US);
    split_and_sync(&db, "", true);
}

#[test]
fn a_c_source_and_an_icu_target_with_a_column_collation_sync_every_key_exactly() {
    let db = TestDb::new();
    recreate(&db, false, ICU_EN_US);
    split_and_sync(&db, "COLLATE \"fr-FR-x-icu\"", false);
}

#[test]
fn servers_sharing_a_locale_range_batches_in_it_and_each_sides_key_index_serves_them() {
    for (locale, shared) in [
        ("LOCALE 'C.UTF-8'", "native libc C.UTF-8 version none"),
        (
            "LOCALE_PROVIDER icu ICU_LOCALE 'ja-JP' LOCALE 'C'",
            "native icu ja-JP version ",
        ),
    ] {
        let db = TestDb::new();
        recreate(&db, true, locale);
        recreate(&db, false, locale);
        let path = create_and_cutover(&db, "", false);
        let (seq, idx) = source_scans(&db);
        let batches: i64 = db
            .target_sql("SELECT count(*) FROM shadan.batches")
            .parse()
            .unwrap();
        assert!(batches >= 20, "{locale}: {batches} batches");
        let order = db.target_sql("SELECT DISTINCT key_order FROM shadan.batches");
        assert!(order.starts_with(shared), "{locale}: {order}");
        // Each batch an index range scan, not a scan of the table (as byte ranges were).
        assert!(
            idx >= batches && seq < batches / 4,
            "{locale}: {seq} sequential and {idx} index scans for {batches} batches"
        );
        let plan = db.shadan(&["plan", "--mapping", s(&path), "--json"]).json();
        let how = plan.to_string();
        assert!(how.contains("in the collation both sides share"), "{how}");
        night_and_relayout(&db, &path);
        assert!(
            db.target_sql("SELECT DISTINCT key_order FROM shadan.batches")
                .starts_with(shared),
            "{locale}: a relayout keeps the shared order"
        );
    }
}

#[test]
fn bounds_cut_in_a_shared_locale_are_never_used_once_the_keys_order_by_bytes() {
    let locale = "LOCALE_PROVIDER icu ICU_LOCALE 'ja-JP' LOCALE 'C'";
    let db = TestDb::new();
    recreate(&db, true, locale);
    recreate(&db, false, locale);
    // A cutover that stops partway: the target refuses some keys for now.
    db.target_sql(
        "CREATE SCHEMA r; CREATE TABLE r.acct (k text, sub char(2), v text, PRIMARY KEY (k, sub)); \
         CREATE FUNCTION r.not_yet() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN IF NEW.k LIKE 'Z%' THEN RAISE EXCEPTION 'not yet'; END IF; RETURN NEW; END$$; \
         CREATE TRIGGER not_yet BEFORE INSERT ON r.acct FOR EACH ROW EXECUTE FUNCTION r.not_yet()",
    );
    source_accounts(&db, 6000);
    let path = write_mapping(&db, MAPPING);
    let cutover = [
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "100",
        "--jobs",
        "1",
    ];
    db.shadan(&cutover).expect_code(1);
    assert!(db
        .target_sql("SELECT DISTINCT key_order FROM shadan.batches")
        .starts_with("native icu ja-JP"));
    // Both sides' keys now order by bytes: the ja-JP bounds select other keys.
    let to_c = "ALTER TABLE {t} ALTER COLUMN k TYPE text COLLATE \"C\", ALTER COLUMN sub TYPE char(2) COLLATE \"C\"";
    db.target_sql("DROP TRIGGER not_yet ON r.acct");
    db.source_sql(&to_c.replace("{t}", "s.acct"));
    db.target_sql(&to_c.replace("{t}", "r.acct"));
    let resume = db.shadan(&[&cutover[..], &["--resume"]].concat());
    resume.expect_stderr(2, "another key order");
    // Emptied and cut over again, then the same change after a finished cutover: sync
    // lays the table out again rather than trusting bounds of another order.
    db.target_sql(
        "DROP TABLE r.acct; DROP SCHEMA shadan CASCADE; \
         CREATE TABLE r.acct (k text, sub char(2), v text, PRIMARY KEY (k, sub))",
    );
    let back = "ALTER TABLE {t} ALTER COLUMN k TYPE text COLLATE \"ja-JP-x-icu\", ALTER COLUMN sub TYPE char(2) COLLATE \"ja-JP-x-icu\"";
    db.source_sql(&back.replace("{t}", "s.acct"));
    db.target_sql(&back.replace("{t}", "r.acct"));
    db.shadan(&cutover).expect_code(0);
    db.source_sql(&to_c.replace("{t}", "s.acct"));
    db.target_sql(&to_c.replace("{t}", "r.acct"));
    db.source_sql("UPDATE s.acct SET v = v || '+' WHERE pg_catalog.hashtext(k) % 5 = 0");
    db.shadan(&["sync", "--mapping", s(&path)]).expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after the relayout");
    assert_eq!(
        db.target_sql("SELECT DISTINCT key_order FROM shadan.batches"),
        "bytes"
    );
    assert_eq!(
        db.target_sql("SELECT sum(rows) FROM shadan.batches"),
        db.target_sql("SELECT count(*) FROM r.acct"),
        "the checkpoints count the target's rows"
    );
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);
}

#[test]
fn keys_whose_equality_is_not_byte_equality_are_refused_by_plan() {
    let db = TestDb::new();
    // (An unconstrained numeric is accepted: tests/keys.rs.)
    for (key_type, what) in [
        ("float8", "double precision"),
        ("bpchar", "bpchar"),
        ("text COLLATE shadan_ci", "nondeterministic"),
    ] {
        for side in [true, false] {
            let sql = format!(
                "DROP SCHEMA IF EXISTS x CASCADE; DROP COLLATION IF EXISTS shadan_ci; \
                 CREATE COLLATION shadan_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false); \
                 CREATE SCHEMA x; CREATE TABLE x.t (k {key_type} PRIMARY KEY, v text)"
            );
            let plain = "DROP SCHEMA IF EXISTS x CASCADE; CREATE SCHEMA x; CREATE TABLE x.t (k text PRIMARY KEY, v text)";
            // Only one side has the inexact key; the other has text, so types still differ
            // and plan must name the key problem itself.
            let (src, tgt) = if side {
                (sql.as_str(), plain)
            } else {
                (plain, sql.as_str())
            };
            db.source_sql(src);
            db.target_sql(tgt);
            let path = write_mapping(
                &db,
                "[mapping]\nname = \"k\"\nown_retailer = \"R0001\"\n\n[[table]]\nsource = \"x.t\"\ntarget = \"x.t\"\nkey = [\"k\"]\nscope = \"all\"\n\n[table.columns]\nk = \"public\"\nv = \"public\"\n",
            );
            let run = db.shadan(&["plan", "--mapping", s(&path)]);
            run.expect_code(2);
            assert!(
                run.stderr.contains("key") && run.stderr.contains(what),
                "{key_type}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_stretched_cutover_killed_mid_copy_resumes_every_key_exactly_once() {
    let db = TestDb::new();
    recreate(&db, true, ICU_EN_US);
    source_accounts(&db, 20000);
    db.target_sql(
        "CREATE SCHEMA r; CREATE TABLE r.acct (k text, sub char(2), v text, PRIMARY KEY (k, sub))",
    );
    let path = write_mapping(&db, MAPPING);
    let args = [
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "100",
        "--jobs",
        "2",
    ];
    let mut child = db.spawn_quiet(&args);
    db.wait_for_batches(&mut child, 20);
    child.kill().expect("killing shadan");
    child.wait().expect("waiting for shadan");
    let total: usize = db
        .target_sql("SELECT count(*) FROM shadan.batches")
        .parse()
        .unwrap_or(0);
    let written = db.written_batches();
    assert!(
        written < total,
        "{written} of {total} batches written before the kill"
    );
    // Every batch written holds exactly its rows.
    assert_eq!(
        db.target_sql("SELECT count(*) FROM r.acct"),
        db.target_sql("SELECT coalesce(sum(rows), 0) FROM shadan.batches")
    );
    let mut resume = args.to_vec();
    resume.push("--resume");
    db.shadan(&resume).expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after the resumed cutover");
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);
}

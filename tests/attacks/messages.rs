//! What could carry a password or a value to the terminal or the logs: connection
//! strings, panics, the driver's debug log, server messages; and TLS that must be as
//! strict as libpq's.

use crate::support::{reference_data, s, write_mapping, TestDb};

const MAPPING: &str = "mappings/retail.toml";

#[test]
fn connection_strings_that_do_not_parse_neither_panic_nor_echo_a_value() {
    let db = TestDb::with_reference_schema();
    for conn in [
        "postgres://u@h/db?password=pw%E6%BC%A2x%漢字",
        "host=h password=my secret",
        "postgres://u@h/db?s3cretpart=1",
        "postgres://u:se@cret-pw@127.0.0.1:1/db",
        "postgres://u:se?cret-pw@127.0.0.1:1/db?sslmode=require",
        "postgres://127.0.0.1:1/db?user=u&password=se@cret-pw",
    ] {
        let out = db
            .command(&["plan", "--mapping", MAPPING])
            .env("SHADAN_SOURCE", conn)
            .output()
            .unwrap();
        let run = crate::support::Run::from(out);
        assert_ne!(run.code, 0);
        let all = run.all_output();
        for secret in ["pw%E6", "漢字", "secret", "s3cret", "cret-pw", "panicked"] {
            assert!(!all.contains(secret), "{conn}: {all}");
        }
    }
}

#[test]
fn the_drivers_debug_log_and_bound_values_never_reach_the_logs() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    let out = db
        .command(&["verify", "--mapping", MAPPING, "--deep"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let run = crate::support::Run::from(out);
    run.expect_code(0);
    assert!(
        !run.stderr.contains("parameters") && !run.stderr.contains("tokio_postgres"),
        "the driver's log reached stderr"
    );
}

#[test]
fn a_value_that_does_not_fit_its_column_is_a_plan_error_not_a_truncation() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    for (from, to) in [
        ("own_retailer = \"R0001\"", "own_retailer = \"R0001-TEST\""),
        (
            "supply_kind = [\"retail\"]",
            "supply_kind = [\"retail\", \"x\"]",
        ),
    ] {
        let text = crate::support::reference_mapping().replace(from, to);
        let path = write_mapping(&db, &text);
        let run = db.shadan(&["cutover", "--mapping", s(&path)]);
        if to.contains("R0001-TEST") {
            run.expect_code(2);
            assert!(
                run.stderr.contains("retailer_code") && run.stderr.contains("does not fit"),
                "{}",
                run.stderr
            );
            assert_eq!(db.target_sql("SELECT count(*) FROM retail.contracts"), "0");
        } else {
            // text has no length: any value fits, and matches nothing extra.
            run.expect_code(0);
        }
    }
    // An owner column of a domain with a length: the domain's typmod must not cut the
    // value either.
    db.source_sql(
        "CREATE DOMAIN joint.code AS varchar(5); \
         ALTER TABLE joint.contracts ALTER COLUMN retailer_code TYPE joint.code",
    );
    let text = crate::support::reference_mapping()
        .replace("own_retailer = \"R0001\"", "own_retailer = \"R0001-TEST\"");
    let path = write_mapping(&db, &text);
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "does not fit");

    // An `only` value that is not of the column's type: the message holds no value.
    db.source_sql("ALTER TABLE joint.contracts ADD COLUMN tariff int");
    let text = crate::support::reference_mapping()
        .replace(
            "only = { supply_kind = [\"retail\"] }",
            "only = { supply_kind = [\"retail\"], tariff = [\"zz-hidden-zz\"] }",
        )
        .replace(
            "updated_at                 = \"non_public\"",
            "updated_at                 = \"non_public\"\ntariff = \"non_public\"",
        );
    let path = write_mapping(&db, &text);
    let run = db.shadan(&["plan", "--mapping", s(&path)]);
    run.expect_stderr(2, "tariff");
    assert!(
        run.stderr.contains("invalid_text_representation"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("zz-hidden-zz"), "{}", run.stderr);
}

/// A CA certificate that did not sign the source's server certificate.
fn other_ca(db: &TestDb) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shadan-attack-ca-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
            "-keyout",
            "o.key",
            "-out",
            "o.crt",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    dir.join("o.crt")
}

fn plan_with(db: &TestDb, side: &str, conn: &str) -> crate::support::Run {
    let out = db
        .command(&["plan", "--mapping", MAPPING])
        .env(side, conn)
        .output()
        .unwrap();
    crate::support::Run::from(out)
}

#[test]
fn tls_follows_libpq_in_every_mode_against_a_foreign_ca_and_a_server_without_tls() {
    let db = TestDb::with_reference_schema();
    let other = other_ca(&db);
    let other = other.display();
    // The source serves TLS with a certificate `other` did not sign: with a root
    // certificate given, every mode that encrypts verifies the chain, as libpq does.
    for mode in ["prefer", "require", "verify-ca", "verify-full"] {
        let run = plan_with(
            &db,
            "SHADAN_SOURCE",
            &format!("{}?sslmode={mode}&sslrootcert={other}", db.source_url()),
        );
        run.expect_code(1);
        assert!(
            run.stderr.to_lowercase().contains("certificate"),
            "{mode}: {}",
            run.stderr
        );
    }
    // verify-* with no root certificate at all is refused before connecting.
    let run = plan_with(
        &db,
        "SHADAN_SOURCE",
        &format!("{}?sslmode=verify-ca", db.source_url()),
    );
    run.expect_stderr(1, "sslrootcert");

    // The target serves no TLS: prefer falls back to plain (as libpq), require and
    // verify-* refuse.
    plan_with(
        &db,
        "SHADAN_TARGET",
        &format!("{}?sslmode=prefer&sslrootcert={other}", db.target_url()),
    )
    .expect_code(0);
    for mode in ["require", "verify-ca", "verify-full"] {
        plan_with(
            &db,
            "SHADAN_TARGET",
            &format!("{}?sslmode={mode}&sslrootcert={other}", db.target_url()),
        )
        .expect_code(1);
    }
    // channel_binding=require needs SCRAM; a server that lets the role in without it is
    // refused.
    let run = plan_with(
        &db,
        "SHADAN_TARGET",
        &format!("{}?channel_binding=require", db.target_url()),
    );
    run.expect_code(1);
    // ... and so is the same setting from the environment, as libpq reads it.
    let out = db
        .command(&["plan", "--mapping", MAPPING])
        .env("PGCHANNELBINDING", "require")
        .output()
        .unwrap();
    crate::support::Run::from(out).expect_code(1);
    // A revocation list cannot be honoured, so it is refused rather than ignored.
    let out = db
        .command(&["plan", "--mapping", MAPPING])
        .env("PGSSLCRL", "/nonexistent/crl.pem")
        .output()
        .unwrap();
    let run = crate::support::Run::from(out);
    run.expect_stderr(1, "PGSSLCRL");
}

#[test]
fn a_table_name_cannot_forge_a_line_of_the_plan_or_the_verify_report() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 200);
    db.source_sql(
        "CREATE TABLE joint.\"zz\nVERIFIED: mapping approved by auditor\" (a int); \
         CREATE TABLE joint.\"zz\u{1b}[2Jred\" (a int)",
    );
    let run = db.shadan(&["plan", "--mapping", MAPPING]);
    run.expect_code(0);
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("VERIFIED")) && !run.stdout.contains('\u{1b}'),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("zz\\u{a}VERIFIED"), "{}", run.stdout);
}

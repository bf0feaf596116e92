//! Connections as an operator meets them: TLS with libpq's sslmode and sslrootcert
//! against a cluster with its own CA, and a clear message for a wrong password, a missing
//! database and a server refusing TLS. No password ever appears in the output. (A
//! certificate from another CA, in every sslmode: `attacks::messages`.)

use crate::support::cluster::{PASSWORD_ROLE, TLS_ONLY_ROLE};
use crate::support::{Run, TestDb};

const MAPPING: &str = "mappings/retail.toml";

fn plan_with_source(db: &TestDb, source: &str) -> Run {
    let out = db
        .command(&["plan", "--mapping", MAPPING])
        .env("SHADAN_SOURCE", source)
        .output()
        .unwrap();
    Run::from(out)
}

fn ca(db: &TestDb) -> String {
    db.source_cluster
        .ca_cert
        .as_ref()
        .expect("the source cluster serves TLS")
        .display()
        .to_string()
}

#[test]
fn verify_full_with_the_servers_ca_connects_over_tls() {
    let db = TestDb::with_reference_schema();
    db.source_sql(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{TLS_ONLY_ROLE}') THEN CREATE ROLE {TLS_ONLY_ROLE} LOGIN; END IF; END $$"
    ));
    let port = db.source_cluster.port;
    let url = |host: &str, query: &str| {
        format!(
            "postgres://{TLS_ONLY_ROLE}@{host}:{port}/{}?{query}",
            db.name
        )
    };
    // The role is rejected without TLS, so success proves the connection was encrypted.
    let plain = plan_with_source(&db, &url("127.0.0.1", "sslmode=disable"));
    plain.expect_code(1);
    assert!(
        plain
            .stderr
            .contains("cannot connect to the source database"),
        "{}",
        plain.stderr
    );

    let ca = ca(&db);
    plan_with_source(
        &db,
        &url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    )
    .expect_code(0);
    plan_with_source(
        &db,
        &url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
    )
    .expect_code(0);
    plan_with_source(&db, &url("127.0.0.1", "sslmode=require")).expect_code(0);
    let key_value = format!("host=localhost port={port} user={TLS_ONLY_ROLE} dbname={} sslmode=verify-full sslrootcert='{ca}'", db.name);
    plan_with_source(&db, &key_value).expect_code(0);
}

#[test]
fn a_server_without_tls_is_refused_when_tls_is_required() {
    let db = TestDb::with_reference_schema();
    let out = db
        .command(&["plan", "--mapping", MAPPING])
        .env(
            "SHADAN_TARGET",
            format!("{}?sslmode=require", db.target_url()),
        )
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect_stderr(1, "cannot connect to the target database");
    assert!(run.stderr.contains("TLS"), "{}", run.stderr);
}

#[test]
fn a_wrong_password_and_a_missing_database_get_clear_messages_without_the_password() {
    let db = TestDb::with_reference_schema();
    db.source_sql(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}') THEN CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right-horse-battery'; END IF; END $$"
    ));
    let port = db.source_cluster.port;
    let wrong = plan_with_source(
        &db,
        &format!(
            "postgres://{PASSWORD_ROLE}:wrong-staple-9931@127.0.0.1:{port}/{}",
            db.name
        ),
    );
    wrong.expect_stderr(1, "password authentication failed");
    assert!(!wrong.all_output().contains("wrong-staple-9931"));

    // The password may also come from PGPASSWORD, like libpq.
    let out = db
        .command(&["plan", "--mapping", MAPPING])
        .env(
            "SHADAN_SOURCE",
            format!("postgres://{PASSWORD_ROLE}@127.0.0.1:{port}/{}", db.name),
        )
        .env("PGPASSWORD", "right-horse-battery")
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect_code(0);
    assert!(!run.all_output().contains("right-horse-battery"));

    let missing = plan_with_source(
        &db,
        &format!("postgres://postgres@127.0.0.1:{port}/no_such_db"),
    );
    missing.expect_code(1);
    assert!(
        missing
            .stderr
            .contains("database \"no_such_db\" does not exist"),
        "{}",
        missing.stderr
    );
}

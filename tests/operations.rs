//! What an operator relies on around the data: JSON logs a scheduler can parse, a stop
//! signal that ends cleanly between batches, and help that shows how to call each command.

use std::process::Stdio;

use crate::support::{reference_data, Run, TestDb};

const MAPPING: &str = "mappings/retail.toml";

fn assert_json_lines(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "something was logged");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

#[test]
fn json_logs_are_one_json_object_per_line_for_every_command_and_for_errors() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 1000);
    for command in ["cutover", "sync", "verify"] {
        let run = db.shadan(&[command, "--mapping", MAPPING, "--log-format", "json"]);
        run.expect_code(0);
        assert_json_lines(&run.stderr);
    }
    db.source_sql("ALTER TABLE joint.contracts ADD COLUMN email text");
    let failed = db.shadan(&["sync", "--mapping", MAPPING, "--log-format", "json"]);
    failed.expect_code(2);
    assert_json_lines(&failed.stderr);
    let event: serde_json::Value =
        serde_json::from_str(failed.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["fields"]["exit_code"], 2);
    assert!(event["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("joint.contracts.email"));
}

#[test]
fn sigterm_stops_a_cutover_between_batches_and_resume_completes_it() {
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
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("interrupted; every committed batch is kept: run the same command again"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.target_sql("SELECT status FROM shadan.runs ORDER BY run_id DESC LIMIT 1"),
        "interrupted"
    );
    assert_eq!(
        db.target_sql("SELECT (SELECT count(*) FROM retail.contracts) + (SELECT count(*) FROM retail.supply_points)"),
        db.target_sql("SELECT coalesce(sum(rows), 0) FROM shadan.batches"),
        "every committed batch holds exactly its rows"
    );
    db.shadan(&["cutover", "--mapping", MAPPING, "--resume"])
        .expect_code(0);
    db.assert_reference_copy_exact();
}

#[test]
fn every_command_explains_itself_with_an_example() {
    let db = TestDb::new();
    let top = db.shadan(&["--help"]);
    top.expect_code(0);
    assert!(
        top.stdout
            .contains("Exit codes: 0 ok, 1 runtime error, 2 usage error"),
        "{}",
        top.stdout
    );
    for command in ["plan", "cutover", "sync", "verify", "grants"] {
        let help = db.shadan(&[command, "--help"]);
        help.expect_code(0);
        assert!(
            help.stdout
                .contains(&format!("Example: shadan {command} --mapping")),
            "{command}: {}",
            help.stdout
        );
    }
    let usage = db.shadan(&["cutover"]);
    usage.expect_stderr(2, "--mapping");
}

#[test]
fn progress_totals_follow_a_table_that_grew() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    db.source_sql(
        "INSERT INTO joint.supply_points (supply_point_id, address, postal_code, voltage_class, area) \
         SELECT lpad((9000000 + g)::text, 22, '0'), 'addr', '000-0000', 'low', 'x' FROM generate_series(1, 500) g",
    );
    let run = db.shadan(&["sync", "--mapping", MAPPING]);
    run.expect_code(0);
    let mut seen = 0;
    for line in run.stderr.lines().filter(|l| l.contains(" rows")) {
        let Some(counts) = line.split_whitespace().find(|w| w.contains('/')) else {
            continue;
        };
        let (done, total) = counts.split_once('/').unwrap();
        if let (Ok(done), Ok(total)) = (done.parse::<u64>(), total.parse::<u64>()) {
            assert!(done <= total, "progress overshoots: {line}");
            seen += 1;
        }
    }
    assert!(seen > 0, "no progress line: {}", run.stderr);
}

#[test]
fn metrics_files_hold_the_last_run_and_keep_the_last_success() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    let dir = std::env::temp_dir().join(format!("shadan-metrics-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let sync_file = dir.join("shadan-sync.prom");
    let verify_file = dir.join("shadan-verify.prom");
    let (sync_path, verify_path) = (sync_file.to_str().unwrap(), verify_file.to_str().unwrap());
    db.shadan(&["cutover", "--mapping", MAPPING]).expect_code(0);
    db.shadan(&["sync", "--mapping", MAPPING, "--metrics-file", sync_path])
        .expect_code(0);
    let text = std::fs::read_to_string(&sync_file).unwrap();
    assert!(
        text.contains("shadan_last_run_exit_code{command=\"sync\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("shadan_rows{command=\"sync\",table=\"retail.contracts\",kind=\"total\"}"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("shadan_bytes{command=\"sync\",table=\"retail.contracts\",kind=\"read\"}"),
        "{text}"
    );
    let success = text
        .lines()
        .find(|l| l.starts_with("shadan_last_success_timestamp_seconds"))
        .unwrap()
        .to_string();
    // A failed night keeps the time of the last success, for "no success in 26 h".
    db.source_sql("ALTER TABLE joint.contracts ADD COLUMN surprise text");
    db.shadan(&["sync", "--mapping", MAPPING, "--metrics-file", sync_path])
        .expect_code(2);
    let text = std::fs::read_to_string(&sync_file).unwrap();
    assert!(
        text.contains("shadan_last_run_exit_code{command=\"sync\"} 2"),
        "{text}"
    );
    assert!(text.contains(&success), "{text}");
    db.source_sql("ALTER TABLE joint.contracts DROP COLUMN surprise");
    // verify's findings by kind.
    db.target_sql(
        "CREATE TEMP TABLE x AS SELECT * FROM retail.supply_points LIMIT 1; \
         UPDATE x SET supply_point_id = '9999999999999999999999'; INSERT INTO retail.supply_points SELECT * FROM x",
    );
    db.shadan(&[
        "verify",
        "--mapping",
        MAPPING,
        "--metrics-file",
        verify_path,
    ])
    .expect_code(3);
    let text = std::fs::read_to_string(&verify_file).unwrap();
    assert!(
        text.contains("shadan_last_run_exit_code{command=\"verify\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("shadan_verify_findings{table=\"retail.supply_points\",kind=\"extra\"} 1"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn log_lines_carry_colour_codes_only_on_a_terminal_and_never_with_no_color() {
    let db = TestDb::with_reference_schema();
    reference_data(&db, 300);
    // stderr a file or a pipe (cron, a journal): plain text.
    let run = db.shadan(&["cutover", "--mapping", MAPPING]);
    run.expect_code(0);
    assert!(run.stderr.contains("cutover planned"), "{}", run.stderr);
    assert!(!has_colour(&run.stderr), "{:?}", run.stderr);
    // On a terminal (script(1) gives the run a pseudo-terminal): colour, unless NO_COLOR.
    let on_terminal = |no_color: Option<&str>| {
        let mut command = std::process::Command::new("script");
        command.args([
            "-qec",
            &format!("{} sync --mapping {MAPPING}", env!("CARGO_BIN_EXE_shadan")),
            "/dev/null",
        ]);
        let c = db.command(&[]);
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                command.env(k, v);
            }
        }
        command
            .env_remove("NO_COLOR")
            .current_dir(crate::support::repo());
        if let Some(v) = no_color {
            command.env("NO_COLOR", v);
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .expect("running script");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_terminal(None);
    assert!(has_colour(&coloured), "{coloured:?}");
    let plain = on_terminal(Some("1"));
    assert!(
        plain.contains("reading only rows written since"),
        "{plain:?}"
    );
    assert!(!has_colour(&plain), "{plain:?}");
}

/// Whether text holds an SGR escape (`ESC [ digits ; … m`), which sets colours; the
/// cursor moves of progress bars are not colour.
fn has_colour(text: &str) -> bool {
    text.split('\u{1b}').skip(1).any(|rest| {
        rest.strip_prefix('[').is_some_and(|r| {
            let end = r.find(|c: char| !(c.is_ascii_digit() || c == ';'));
            end.is_some_and(|i| r[i..].starts_with('m'))
        })
    })
}

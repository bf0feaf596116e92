//! What the retail server can observe of a sync must not depend on changes to
//! non-public columns alone: its table statistics and its statement log (with
//! parameters, session by session and in order) after a night of meter changes and
//! change times are those of a night when nothing changed.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::cluster::{clusters, Cluster};
use crate::support::{reference_data, TestDb};

const MAPPING: &str = "mappings/retail.toml";

/// Every table's access counters in the target database (`pg_stat_user_tables`, the
/// tool's own schema included), once the servers' statistics have settled.
fn counters(db: &TestDb) -> BTreeMap<String, Vec<i64>> {
    let read = || {
        db.target_sql(
            "SELECT schemaname || '.' || relname, seq_scan, coalesce(seq_tup_read, 0), coalesce(idx_scan, 0), \
                    coalesce(idx_tup_fetch, 0), n_tup_ins, n_tup_upd, n_tup_del \
             FROM pg_stat_user_tables WHERE schemaname NOT LIKE 'pg_temp%' ORDER BY 1",
        )
    };
    // A backend's counters reach the shared statistics when it exits, a moment after
    // its client saw the connection close.
    let mut last = read();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    last.lines()
        .map(|l| {
            let mut fields = l.split('|');
            let name = fields.next().unwrap().to_string();
            (name, fields.map(|f| f.parse().unwrap()).collect())
        })
        .collect()
}

fn delta(before: &BTreeMap<String, Vec<i64>>, after: &BTreeMap<String, Vec<i64>>) -> String {
    let mut out = String::new();
    for (table, now) in after {
        let then = before
            .get(table)
            .cloned()
            .unwrap_or_else(|| vec![0; now.len()]);
        let d: Vec<String> = now
            .iter()
            .zip(&then)
            .map(|(a, b)| (a - b).to_string())
            .collect();
        out.push_str(&format!("{table}: {}\n", d.join(" ")));
    }
    out
}

/// The statements the target's log gained since `from` bytes, with numbers and hex
/// strings (run ids, times, snapshot names, digests) masked: per session (the log line's
/// `[pid]`), its statements in the order it ran them, and the sessions sorted. Which
/// session reads which table, and in what order, is as observable as the statements.
fn statements(cluster: &Cluster, from: u64) -> Vec<String> {
    let log = std::fs::read(cluster.log()).unwrap();
    let text = String::from_utf8_lossy(&log[from as usize..]).into_owned();
    let mut sessions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for l in text.lines() {
        if !l.starts_with(char::is_whitespace) {
            if let Some(pid) = l
                .split_once(" [")
                .and_then(|(_, rest)| rest.split_once(']'))
            {
                current = pid.0.to_string();
            }
        }
        let kept = !l.contains("pg_stat_user_tables")
            && (l.starts_with(char::is_whitespace)
                || l.contains("statement: ")
                || l.contains("execute ")
                || l.contains("parameters: "));
        if kept {
            sessions.entry(current.clone()).or_default().push(mask(l));
        }
    }
    let mut lines: Vec<String> = sessions.into_values().map(|s| s.join("\n")).collect();
    lines.sort();
    lines
}

fn mask(line: &str) -> String {
    let mut out = String::new();
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        // Hex strings, and bytea values (`\x` then hex: digests, row prints).
        let digits = token.strip_prefix('x').unwrap_or(token);
        let hex = digits.len() >= 8 && digits.chars().all(|c| c.is_ascii_hexdigit());
        if hex {
            out.push('#');
        } else {
            // A run of digits is one mark: prepared statements are numbered by the driver
            // in whatever order the connections prepare them.
            for c in token.chars() {
                if !c.is_ascii_digit() {
                    out.push(c);
                } else if !out.ends_with('#') {
                    out.push('#');
                }
            }
        }
        token.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn log_size(cluster: &Cluster) -> u64 {
    std::fs::metadata(cluster.log()).unwrap().len()
}

/// The names of the prepared statements each target session ran since `from` bytes, in
/// order, the sessions sorted. The driver numbers names from one counter for every
/// connection of the process, so with one worker they are the same from night to night
/// unless something else (a source statement) took a number in between.
fn statement_names(cluster: &Cluster, from: u64) -> Vec<String> {
    let log = std::fs::read(cluster.log()).unwrap();
    let text = String::from_utf8_lossy(&log[from as usize..]).into_owned();
    let mut sessions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in text.lines() {
        let Some((_, rest)) = l.split_once(" [") else {
            continue;
        };
        let Some((pid, rest)) = rest.split_once(']') else {
            continue;
        };
        if let Some((_, named)) = rest.split_once("execute ") {
            let name = named.split(':').next().unwrap_or_default().to_string();
            sessions.entry(pid.to_string()).or_default().push(name);
        }
    }
    let mut names: Vec<String> = sessions.into_values().map(|s| s.join(" ")).collect();
    names.sort();
    names
}

/// One sync as a night's job; returns what the target saw: counters moved and statements.
fn observed_sync(db: &TestDb, target: &Cluster) -> (String, Vec<String>, Value) {
    observed_sync_with(db, target, &[]).0
}

/// [`observed_sync`] with more arguments; also the prepared statements' names.
fn observed_sync_with(
    db: &TestDb,
    target: &Cluster,
    args: &[&str],
) -> ((String, Vec<String>, Value), Vec<String>) {
    let before = counters(db);
    let from = log_size(target);
    let mut all = vec!["sync", "--mapping", MAPPING, "--json"];
    all.extend_from_slice(args);
    let run = db.shadan(&all);
    run.expect_code(0);
    let after = counters(db);
    (
        (delta(&before, &after), statements(target, from), run.json()),
        statement_names(target, from),
    )
}

/// A reference copy on a target cluster of its own (named `name`), synced once, whose
/// database then logs every statement.
fn logged_copy(name: &str) -> (&'static Cluster, TestDb) {
    let target = Cluster::private(name);
    let db = TestDb::between(&clusters().source, target).reference_schema();
    reference_data(&db, 600);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "150"])
        .expect_code(0);
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
    db.target_sql(&format!(
        "ALTER DATABASE {} SET log_statement = 'all'",
        db.name
    ));
    (target, db)
}

#[test]
fn a_night_of_non_public_changes_looks_to_the_retail_server_like_a_night_of_none() {
    let (target, db) = logged_copy("observer");

    let (quiet, quiet_log, _) = observed_sync(&db, target);
    // Meter changes and change times across every batch, own contracts' wheeling plans.
    db.source_sql(
        "UPDATE joint.supply_points SET meter_id = 'M-NEW', updated_at = now() WHERE supply_point_id::numeric % 7 = 0; \
         UPDATE joint.contracts SET wheeling_rate_plan = 'changed', updated_at = now() WHERE contract_id % 5 = 0",
    );
    let (busy, busy_log, printed) = observed_sync(&db, target);
    let reread: u64 = printed["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sync"]["source_rows"].as_u64().unwrap())
        .sum();
    assert!(
        reread >= 100,
        "the changed rows were read from the source: {printed}"
    );
    assert!(
        !quiet_log.is_empty(),
        "the log records the sync's statements"
    );
    assert_eq!(
        quiet, busy,
        "the target's table statistics moved differently"
    );
    if quiet_log != busy_log {
        let extra: Vec<&String> = busy_log.iter().filter(|l| !quiet_log.contains(l)).collect();
        let missing: Vec<&String> = quiet_log.iter().filter(|l| !busy_log.contains(l)).collect();
        panic!("the target's statement log differs:\nonly after the non-public night: {extra:#?}\nonly after the quiet night: {missing:#?}");
    }
    db.assert_reference_copy_exact();
}

#[test]
fn non_public_changes_beside_public_ones_leave_the_target_s_statements_as_they_were() {
    let (target, db) = logged_copy("observer-beside");
    // The same public change each night (the same rows, values of the same shape).
    let public = |n: u32| {
        db.source_sql(&format!(
            "UPDATE joint.contracts SET phone = '022-111-{n:04}' WHERE contract_id % 40 = 1"
        ))
    };
    public(1);
    let ((alone, alone_log, _), alone_names) = observed_sync_with(&db, target, &["--jobs", "1"]);
    public(2);
    // Beside it, meter changes in every batch of the supply points, which sync reads.
    db.source_sql(
        "UPDATE joint.supply_points SET meter_id = 'M-NEW', updated_at = now() \
         WHERE supply_point_id::numeric % 7 = 0",
    );
    let ((beside, beside_log, printed), beside_names) =
        observed_sync_with(&db, target, &["--jobs", "1"]);
    let reread = printed["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "retail.supply_points")
        .map(|t| t["sync"]["source_rows"].as_u64().unwrap())
        .unwrap();
    assert!(reread > 0, "the meter changes were read: {printed}");
    assert_eq!(
        alone, beside,
        "the target's table statistics moved differently"
    );
    assert_eq!(
        alone_names, beside_names,
        "the target's prepared statements are numbered differently"
    );
    if alone_log != beside_log {
        let extra: Vec<&String> = beside_log
            .iter()
            .filter(|l| !alone_log.contains(l))
            .collect();
        let missing: Vec<&String> = alone_log
            .iter()
            .filter(|l| !beside_log.contains(l))
            .collect();
        panic!("the target's statement log differs:\nonly with the meter changes: {extra:#?}\nonly without: {missing:#?}");
    }
    db.assert_reference_copy_exact();
}

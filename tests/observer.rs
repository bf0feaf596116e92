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
        let hex = token.len() >= 8 && token.chars().all(|c| c.is_ascii_hexdigit());
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

/// One sync as a night's job; returns what the target saw: counters moved and statements.
fn observed_sync(db: &TestDb, target: &Cluster) -> (String, Vec<String>, Value) {
    let before = counters(db);
    let from = log_size(target);
    let run = db.shadan(&["sync", "--mapping", MAPPING, "--json"]);
    run.expect_code(0);
    let after = counters(db);
    (delta(&before, &after), statements(target, from), run.json())
}

#[test]
fn a_night_of_non_public_changes_looks_to_the_retail_server_like_a_night_of_none() {
    let target = Cluster::private("observer");
    let db = TestDb::between(&clusters().source, target).reference_schema();
    reference_data(&db, 600);
    db.shadan(&["cutover", "--mapping", MAPPING, "--batch-rows", "150"])
        .expect_code(0);
    db.shadan(&["sync", "--mapping", MAPPING]).expect_code(0);
    db.target_sql(&format!(
        "ALTER DATABASE {} SET log_statement = 'all'",
        db.name
    ));

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

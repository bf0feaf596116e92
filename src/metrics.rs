//! `--metrics-file PATH` on cutover, sync and verify: an OpenMetrics (Prometheus text)
//! file for node_exporter's textfile collector, written atomically (a temporary file in
//! the same directory, then a rename), so the collector never reads half a file. It
//! holds the last run's start, end and exit code, the time of the last success (carried
//! over from the previous file when this run failed), rows per table and kind, bytes of
//! row data read and written per table (cutover, sync), and for verify the differences
//! and leaks by kind. Use one file per command.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The manifest or report of the run in this process, kept for [`write`].
static RESULT: std::sync::Mutex<Option<Value>> = std::sync::Mutex::new(None);

/// Keeps the run's manifest (cutover, sync) or report (verify) for the metrics file.
pub fn remember(value: Value) {
    if let Ok(mut r) = RESULT.lock() {
        *r = Some(value);
    }
}

/// The value kept by [`remember`].
pub fn remembered() -> Option<Value> {
    RESULT.lock().ok().and_then(|r| r.clone())
}

/// Bytes moved per (target table, kind) in this process's run.
static BYTES: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts `n` bytes of tuple data for `table`: `read` from the source, `written` to the
/// target.
pub fn count_bytes(table: &impl std::fmt::Display, kind: &'static str, n: usize) {
    if let Ok(mut b) = BYTES.lock() {
        *b.entry((table.to_string(), kind)).or_default() += n as u64;
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A label value, escaped as the exposition format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The last success time recorded in an earlier file for `command`, if any.
fn earlier_success(path: &Path, command: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let prefix = format!(
        "shadan_last_success_timestamp_seconds{{command=\"{}\"}} ",
        label(command)
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// Writes the metrics of one run of `command` to `path`. `result` is the manifest (cutover,
/// sync) or the verify report, when the run got that far.
pub fn write(
    path: &Path,
    command: &str,
    started: f64,
    exit_code: u8,
    result: Option<&Value>,
) -> std::io::Result<()> {
    let ended = now();
    let c = label(command);
    // Each family's HELP and TYPE directly before its samples, families not interleaved.
    let families: [(&str, &str); 7] = [
        (
            "shadan_last_run_start_timestamp_seconds",
            "When the last run started.",
        ),
        (
            "shadan_last_run_end_timestamp_seconds",
            "When the last run ended.",
        ),
        (
            "shadan_last_run_exit_code",
            "The last run's exit code (0 ok, 1 error, 2 usage, 3 differences, 4 leak).",
        ),
        (
            "shadan_last_success_timestamp_seconds",
            "When a run last exited 0.",
        ),
        ("shadan_rows", "Rows per table in the last run, by kind."),
        (
            "shadan_verify_findings",
            "What the last verify found, by kind.",
        ),
        (
            "shadan_bytes",
            "Bytes of row data per table in the last run: read from the source, written to the target.",
        ),
    ];
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); families.len()];
    samples[0].push(format!("{{command=\"{c}\"}} {started:.3}"));
    samples[1].push(format!("{{command=\"{c}\"}} {ended:.3}"));
    samples[2].push(format!("{{command=\"{c}\"}} {exit_code}"));
    let success = if exit_code == 0 {
        Some(format!("{ended:.3}"))
    } else {
        earlier_success(path, command)
    };
    if let Some(success) = success {
        samples[3].push(format!("{{command=\"{c}\"}} {success}"));
    }
    for t in result
        .and_then(|r| r["tables"].as_array())
        .into_iter()
        .flatten()
    {
        let table = label(t["target"].as_str().unwrap_or("?"));
        for (kind, value) in [
            ("total", &t["rows"]),
            ("source", &t["source_rows"]),
            ("target", &t["target_rows"]),
            ("inserted", &t["changes"]["inserted"]),
            ("updated", &t["changes"]["updated"]),
            ("deleted", &t["changes"]["deleted"]),
            ("purged", &t["changes"]["purged"]),
        ] {
            if let Some(n) = value.as_u64() {
                samples[4].push(format!(
                    "{{command=\"{c}\",table=\"{table}\",kind=\"{kind}\"}} {n}"
                ));
            }
        }
        for kind in ["missing", "extra", "changed"] {
            if let Some(n) = t[kind].as_u64() {
                samples[5].push(format!("{{table=\"{table}\",kind=\"{kind}\"}} {n}"));
            }
        }
    }
    for l in result
        .and_then(|r| r["leaks"].as_array())
        .into_iter()
        .flatten()
    {
        samples[5].push(format!(
            "{{table=\"{}\",kind=\"leak_{}\"}} {}",
            label(l["table"].as_str().unwrap_or("?")),
            label(l["kind"].as_str().unwrap_or("?")),
            l["count"].as_u64().unwrap_or(0)
        ));
    }
    if let Ok(bytes) = BYTES.lock() {
        for ((table, kind), n) in bytes.iter() {
            samples[6].push(format!(
                "{{command=\"{c}\",table=\"{}\",kind=\"{kind}\"}} {n}",
                label(table)
            ));
        }
    }
    let mut out = String::new();
    for ((name, help), lines) in families.iter().zip(&samples) {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for line in lines {
            let _ = writeln!(out, "{name}{line}");
        }
    }
    out.push_str("# EOF\n");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, out)?;
    std::fs::rename(&temporary, path)
}

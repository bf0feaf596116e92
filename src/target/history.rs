//! The run history in the target's `shadan` schema, as a chain that proves itself: each
//! finished run's manifest carries the blake3 of the manifest before it
//! (`previous_manifest_blake3`), and its own blake3 is stored beside it. Deleting or
//! editing a past run breaks the chain at the next one; `shadan history --check` walks it.
//! Nothing here needs the source.

use serde_json::{json, Value};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::Error;

/// The status of a run record until its manifest is written (`state.sql`'s default).
const RUNNING: &str = "running";

/// blake3 of a manifest as stored (`jsonb::text`, which is canonical).
fn digest(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// Closes a run record with its status and manifest, linked to the last finished run, in
/// one transaction on `client` (the lock's session); returns the stored manifest.
pub async fn close_run(
    client: &Client,
    run_id: i64,
    status: &str,
    mut manifest: Value,
) -> Result<Value, Error> {
    let context = "recording the end of the run in the target";
    let done = async {
        // Two round trips: the transaction begins with the manifest's update, which links
        // it to the last finished run; its digest is stored with the COMMIT. The driver
        // pipelines each pair, and a failed statement aborts the transaction, so the
        // COMMIT sent behind it rolls back instead.
        manifest["status"] = json!(status);
        let (_, (stored, text)) = tokio::try_join!(
            async {
                client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(Error::db(context))
            },
            super::state::finish_run(client, run_id, status, &manifest)
        )?;
        let hash = digest(&text);
        tokio::try_join!(
            async {
                client
                    .execute_typed(
                        "UPDATE shadan.runs SET manifest_blake3 = $2 WHERE run_id OPERATOR(pg_catalog.=) $1",
                        &[(&run_id, Type::INT8), (&hash, Type::TEXT)],
                    )
                    .await
                    .map_err(Error::db(context))
            },
            async {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(Error::db(context))
            }
        )?;
        Ok(stored)
    }
    .await;
    if done.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    done
}

/// The last `limit` runs, newest first: command, times, status and manifest.
pub async fn list(client: &Client, limit: i64) -> Result<Vec<Value>, Error> {
    let rows = client
        .query(
            "SELECT run_id, command, status, \
                    pg_catalog.to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    pg_catalog.to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    mapping_name, mapping_blake3, source_snapshot, manifest::pg_catalog.text, manifest_blake3 \
             FROM shadan.runs ORDER BY run_id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(Error::db("reading the run history in the target"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let manifest: Option<Value> = r
                .get::<_, Option<String>>(8)
                .and_then(|m| serde_json::from_str(&m).ok());
            // What the chain covers comes from the manifest (hashed); the columns only
            // for a run that never finished.
            let from = |key: &str, column: Value| -> Value {
                manifest
                    .as_ref()
                    .map(|m| m[key].clone())
                    .filter(|v| !v.is_null())
                    .unwrap_or(column)
            };
            let tables: Value = manifest
                .as_ref()
                .map(|m| {
                    m["tables"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| json!({"target": t["target"], "rows": t["rows"], "changes": t.get("changes")}))
                        .collect::<Vec<_>>()
                        .into()
                })
                .unwrap_or(Value::Null);
            // A row without a manifest is a run that never finished, whatever its status
            // column says: only a manifest records how a run ended.
            let status = match &manifest {
                Some(_) => from("status", json!(r.get::<_, String>(2))),
                None if r.get::<_, String>(2) == RUNNING => json!(RUNNING),
                None => json!("unrecorded"),
            };
            json!({
                "run_id": r.get::<_, i64>(0),
                "command": from("command", json!(r.get::<_, String>(1))),
                "status": status,
                "started_at": from("started_at", json!(r.get::<_, Option<String>>(3))),
                // An end only a manifest records: a column beside it is not hashed.
                "finished_at": manifest.as_ref().map_or(Value::Null, |m| m["finished_at"].clone()),
                "mapping": from("mapping", json!({"name": r.get::<_, String>(5), "blake3": r.get::<_, String>(6)})),
                "source_snapshot": from("source_snapshot", json!(r.get::<_, Option<String>>(7))),
                "manifest_blake3": r.get::<_, Option<String>>(9),
                "tables": tables,
            })
        })
        .collect())
}

/// Walks the chain of finished runs, oldest first; returns the first break, described
/// (a run whose manifest was edited, or whose predecessor was deleted or edited), and the
/// head of the chain (the last finished run's manifest blake3).
pub async fn check(client: &Client) -> Result<(Option<String>, Option<String>), Error> {
    let rows = client
        .query_typed(
            "SELECT run_id, status, manifest::pg_catalog.text, manifest_blake3 FROM shadan.runs \
             ORDER BY run_id",
            &[],
        )
        .await
        .map_err(Error::db("reading the run history in the target"))?;
    let mut previous: Option<String> = None;
    let mut chained = false;
    for r in &rows {
        let (run_id, status, text, stored): (i64, String, Option<String>, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let Some(text) = text else {
            // Only a run that never finished (still going, or killed) has no manifest; a
            // row that claims an end without one was not written by shadan.
            if status != RUNNING {
                return Ok((
                    Some(format!(
                        "run {run_id}: it claims status {:?} but has no manifest (not written by shadan)",
                        crate::ident::escape_controls(&status)
                    )),
                    previous,
                ));
            }
            continue;
        };
        let manifest = serde_json::from_str::<Value>(&text).ok();
        // A manifest written since the chain exists names its predecessor (maybe null).
        let in_chain = manifest
            .as_ref()
            .is_some_and(|m| m.get("previous_manifest_blake3").is_some());
        if in_chain && manifest.as_ref().and_then(|m| m["status"].as_str()) != Some(&status) {
            return Ok((
                Some(format!(
                    "run {run_id}: its status {:?} is not the one its manifest records",
                    crate::ident::escape_controls(&status)
                )),
                previous,
            ));
        }
        let Some(stored) = stored else {
            if chained || in_chain {
                return Ok((
                    Some(format!("run {run_id}: its manifest has no digest")),
                    previous,
                ));
            }
            continue; // recorded before the chain existed
        };
        if digest(&text) != stored {
            return Ok((
                Some(format!(
                    "run {run_id}: its manifest was edited (its blake3 differs)"
                )),
                previous,
            ));
        }
        let claimed: Option<String> = manifest
            .as_ref()
            .and_then(|m| m["previous_manifest_blake3"].as_str().map(String::from));
        if claimed != previous && (chained || claimed.is_some()) {
            return Ok((
                Some(format!(
                    "run {run_id}: the run before it is not the one it was chained to (deleted or edited)"
                )),
                previous,
            ));
        }
        previous = Some(stored);
        chained = true;
    }
    Ok((None, previous))
}

/// The history for a person: one line per run, then the chain's verdict when checked
/// (`chain`: the first break, and the head).
pub fn to_text(runs: &[Value], chain: Option<(&Option<String>, &Option<String>)>) -> String {
    let mut out = String::new();
    for r in runs {
        let tables: Vec<String> = r["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| format!("{} {}", t["target"].as_str().unwrap_or("?"), t["rows"]))
            .collect();
        let digest = r["mapping"]["blake3"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "run {:>4}  {:<8} {:<11} {} .. {}  {}  mapping {} ({})\n",
            r["run_id"],
            r["command"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            r["started_at"].as_str().unwrap_or("?"),
            r["finished_at"].as_str().unwrap_or("-"),
            crate::ident::escape_controls(&tables.join(", ")),
            crate::ident::escape_controls(r["mapping"]["name"].as_str().unwrap_or("?")),
            &digest[..16.min(digest.len())],
        ));
    }
    match chain {
        Some((None, head)) => out.push_str(&format!(
            "chain intact; head {}\n",
            head.as_deref().unwrap_or("(no finished run)")
        )),
        Some((Some(broken), _)) => out.push_str(&format!("chain BROKEN: {broken}\n")),
        None => {}
    }
    out
}

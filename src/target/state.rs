//! The tool's state in the target's `shadan` schema: batch checkpoints and run manifests.
//! Nothing here is trusted by `verify`, which recomputes everything from the data.

use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

use crate::digest::Accumulator;
use crate::error::Error;
use crate::mapping::name::QualifiedName;
use crate::plan::Plan;
use crate::source::batch::Batch;
use crate::target::prints::RowPrints;

/// A batch as stored, with its checkpoint when written.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// The range.
    pub batch: Batch,
    /// Digest of the rows written, once the batch is written.
    pub written: Option<Accumulator>,
    /// The source snapshot horizon the checkpoint is exact at (see `state.sql`).
    pub horizon: Option<i64>,
    /// The basis (projection and source definitions) of the checkpoint.
    pub basis: Option<String>,
    /// Whether the checkpoint has its row prints ([`RowPrints`], read by [`prints`]).
    pub has_prints: bool,
}

/// A batch's checkpoint as written: the digest of its rows and their prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The multiset digest of the batch's rows.
    pub digest: Accumulator,
    /// The prints of the same rows.
    pub prints: RowPrints,
}

impl Checkpoint {
    /// The checkpoint of rows given by their digest and row hashes.
    pub fn of<'a>(digest: Accumulator, hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> Self {
        Self {
            digest,
            prints: RowPrints::of_hashes(hashes),
        }
    }
}

/// What every checkpoint a run writes carries besides the digest: the run, the horizon
/// of its source snapshot, and the table's basis (see `state.sql`).
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The run writing the checkpoint.
    pub run_id: i64,
    /// The 64-bit xmin of the run's source snapshot.
    pub horizon: i64,
    /// The table's current basis ([`crate::source::changes::basis`]).
    pub basis: &'a str,
}

/// The stamps of one run's checkpoints: the run, its source snapshot's horizon, and
/// each table's basis (indexed like the plan's tables).
#[derive(Debug, Clone)]
pub struct RunStamps {
    /// The run.
    pub run_id: i64,
    /// The 64-bit xmin of the run's source snapshot.
    pub horizon: i64,
    /// Each table's basis now.
    pub bases: Vec<String>,
    /// Each table's column carrying row `xmin` and its size estimate.
    pub facts: Vec<crate::source::changes::ReadFacts>,
}

impl RunStamps {
    /// Reads each table's basis on the run's snapshot; the run is set once recorded.
    pub async fn read(
        snapshot: &crate::source::snapshot::Snapshot,
        plan: &Plan,
    ) -> Result<Self, Error> {
        // All tables' queries at once: the driver pipelines them on the one session, so
        // 200 tables cost about one round trip, not 600.
        let client = snapshot.client();
        let (bases, facts) = futures_util::future::try_join(
            futures_util::future::try_join_all(
                plan.tables
                    .iter()
                    .map(|t| crate::source::changes::basis(client, t, &plan.own_retailer)),
            ),
            futures_util::future::try_join_all(
                plan.tables
                    .iter()
                    .map(|t| crate::source::changes::read_facts(client, t)),
            ),
        )
        .await?;
        Ok(Self {
            run_id: 0,
            horizon: snapshot.horizon,
            bases,
            facts,
        })
    }

    /// The stamp of table `index`'s checkpoints.
    pub fn of(&self, index: usize) -> Stamp<'_> {
        Stamp {
            run_id: self.run_id,
            horizon: self.horizon,
            basis: &self.bases[index],
        }
    }
}

/// Creates the state schema if needed. Call while holding the target lock, which checked
/// that a `shadan` schema that exists already is the tool's alone
/// ([`super::trust::check`]).
pub async fn ensure_schema(client: &Client) -> Result<(), Error> {
    ensure_schema_then(client, async { Ok(()) }).await
}

/// [`ensure_schema`], then `then` (statements on the same `client` that read the state),
/// once the schema is known to be the tool's own.
pub async fn ensure_schema_then<T>(
    client: &Client,
    then: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    // The schema's statements and a second ownership check run as one implicit
    // transaction: a schema another role created (or renamed into place) after the
    // lock's check fails it, and none of it stays. Only then does `then` read the state:
    // a relation another role owns could run that role's code for any reader.
    let script = format!(
        "{}\n{}",
        include_str!("state.sql"),
        super::trust::raise_unless_alone()
    );
    client
        .batch_execute(&script)
        .await
        .map_err(Error::db("creating the shadan state schema in the target"))?;
    then.await
}

/// Checkpoints are written only while the run that writes them still holds the target's
/// writer lock: its session's pid is in `shadan.runs.lock_pid`, and the lock must be
/// granted to that pid. A run whose lock session died (so that another run may have
/// started) fails at its next commit instead of mixing its writes with the other's.
const LOCK_STILL_HELD: &str = "EXISTS (SELECT 1 FROM pg_catalog.pg_locks l \
    JOIN shadan.runs r ON r.lock_pid OPERATOR(pg_catalog.=) l.pid \
    WHERE r.run_id OPERATOR(pg_catalog.=) $5 AND l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted \
      AND l.classid OPERATOR(pg_catalog.=) 21320 AND l.objid OPERATOR(pg_catalog.=) 1 \
      AND l.objsubid OPERATOR(pg_catalog.=) 2)";

/// The stored batches of a target table, in key order.
pub async fn batches(
    client: &Client,
    table_index: usize,
    target: &QualifiedName,
) -> Result<Vec<StoredBatch>, Error> {
    let rows = client
        .query_typed(
            "SELECT batch_no, lower_key, upper_key, rows, lanes, horizon, basis, prints IS NOT NULL \
             FROM shadan.batches WHERE target_table OPERATOR(pg_catalog.=) $1 ORDER BY batch_no",
            &[(&target.to_string(), Type::TEXT)],
        )
        .await
        .map_err(Error::db(format!("reading the checkpoints of {target}")))?;
    Ok(rows
        .iter()
        .map(|r| {
            let count: Option<i64> = r.get(3);
            let lanes: Option<Vec<u8>> = r.get(4);
            StoredBatch {
                batch: Batch {
                    table: table_index,
                    no: r.get(0),
                    lower: r.get(1),
                    upper: r.get(2),
                },
                written: match (count, lanes) {
                    (Some(n), Some(l)) => Accumulator::from_lane_bytes(n as u64, &l),
                    _ => None,
                },
                horizon: r.get(5),
                basis: r.get(6),
                has_prints: r.get(7),
            }
        })
        .collect())
}

/// Whether the stored layout of `table` (if any) was cut in the key order its ranges use
/// now ([`crate::plan::TablePlan::key_order`]). A layout recorded without an order (by an
/// older shadan, under the servers' own collations) holds too when both sides' key
/// columns order by bytes of their own; one cut in a shared locale never does then.
pub async fn layout_order_holds(
    client: &Client,
    table: &crate::plan::TablePlan,
) -> Result<bool, Error> {
    let order = table.key_order();
    let holds: Option<bool> = client
        .query_typed_one(
            "SELECT pg_catalog.bool_and(key_order IS NOT DISTINCT FROM $2 \
                 OR ($3 AND key_order IS NULL)) \
             FROM shadan.batches WHERE target_table OPERATOR(pg_catalog.=) $1",
            &[
                (&table.target.to_string(), Type::TEXT),
                (&order, Type::TEXT),
                (&table.keys_order_by_bytes_natively(), Type::BOOL),
            ],
        )
        .await
        .map_err(Error::db(format!(
            "reading the batch layout of {}",
            table.target
        )))?
        .get(0);
    Ok(holds.unwrap_or(true))
}

/// Whether every stored batch of `target` was cut for the projection `projection`.
pub async fn layout_projection_is(
    client: &Client,
    target: &QualifiedName,
    projection: &str,
) -> Result<bool, Error> {
    let other: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM shadan.batches WHERE target_table OPERATOR(pg_catalog.=) $1 \
                 AND projection IS DISTINCT FROM $2)",
            &[&target.to_string(), &projection],
        )
        .await
        .map_err(Error::db(format!("reading the batch layout of {target}")))?
        .get(0);
    Ok(!other)
}

/// Replaces the batch layout of a target table (nothing written yet for any batch), in
/// one transaction: a kill halfway must not leave a layout that covers only some keys.
pub async fn save_layout(
    client: &Client,
    target: &QualifiedName,
    batches: &[Batch],
    run_id: i64,
    cut: &LayoutCut,
) -> Result<(), Error> {
    let context = || format!("saving the batch layout of {target}");
    client
        .batch_execute("BEGIN")
        .await
        .map_err(Error::db(&context))?;
    match write_layout(client, target, batches, run_id, cut).await {
        Ok(()) => client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db(&context)),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// What a layout was cut for: the projection's digest and the key order of its bounds.
#[derive(Debug, Clone)]
pub struct LayoutCut {
    /// blake3 of the projection ([`crate::plan::TablePlan::projection_digest`]).
    pub projection: String,
    /// The key order ([`crate::plan::TablePlan::key_order`]).
    pub key_order: String,
}

impl LayoutCut {
    /// What `table`'s layout is cut for now, under `own_retailer`.
    pub fn of(table: &crate::plan::TablePlan, own_retailer: &str) -> Self {
        Self {
            projection: table.projection_digest(own_retailer),
            key_order: table.key_order(),
        }
    }
}

async fn write_layout(
    client: &Client,
    target: &QualifiedName,
    batches: &[Batch],
    run_id: i64,
    cut: &LayoutCut,
) -> Result<(), Error> {
    let name = target.to_string();
    let context = || format!("saving the batch layout of {target}");
    client
        .execute(
            "DELETE FROM shadan.batches WHERE target_table OPERATOR(pg_catalog.=) $1",
            &[&name],
        )
        .await
        .map_err(Error::db(&context))?;
    let statement = client
        .prepare(
            "INSERT INTO shadan.batches (target_table, batch_no, lower_key, upper_key, run_id, key_order, projection) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(Error::db(&context))?;
    for b in batches {
        client
            .execute(
                &statement,
                &[
                    &name,
                    &b.no,
                    &b.lower,
                    &b.upper,
                    &run_id,
                    &cut.key_order,
                    &cut.projection,
                ],
            )
            .await
            .map_err(Error::db(&context))?;
    }
    Ok(())
}

/// Records a batch as written, inside the transaction that wrote its rows. Fails if the
/// batch was already written, so a batch can never be copied twice.
pub async fn mark_written(
    client: &impl GenericClient,
    target: &QualifiedName,
    batch: &Batch,
    checkpoint: &Checkpoint,
    stamp: Stamp<'_>,
) -> Result<(), Error> {
    let Checkpoint { digest, prints } = checkpoint;
    let updated = client
        .execute(
            &format!("UPDATE shadan.batches SET rows = $3, lanes = $4, run_id = $5, horizon = $6, basis = $7, \
                 prints = $8, written_at = pg_catalog.clock_timestamp() \
             WHERE target_table OPERATOR(pg_catalog.=) $1 AND batch_no OPERATOR(pg_catalog.=) $2 AND rows IS NULL \
               AND {LOCK_STILL_HELD}"),
            &[
                &target.to_string(),
                &batch.no,
                &(digest.rows as i64),
                &digest.lane_bytes(),
                &stamp.run_id,
                &stamp.horizon,
                &stamp.basis,
                &prints.to_bytes(),
            ],
        )
        .await
        .map_err(Error::db(format!("checkpointing {target} {}", batch.describe())))?;
    if updated != 1 {
        return Err(Error::Runtime(format!(
            "{target} {} was already written by another run, or this run lost the target's \
             writer lock; nothing of this batch was kept",
            batch.describe()
        )));
    }
    Ok(())
}

/// Starts a run record; returns its id.
pub async fn start_run(
    client: &Client,
    command: &str,
    plan: &Plan,
    snapshot: &str,
) -> Result<i64, Error> {
    client
        .query_typed_one(
            "INSERT INTO shadan.runs (command, mapping_name, mapping_blake3, tool_version, source_snapshot, lock_pid) \
             VALUES ($1, $2, $3, $4, $5, pg_catalog.pg_backend_pid()) RETURNING run_id",
            &[
                (&command, Type::TEXT),
                (&plan.mapping_name, Type::TEXT),
                (&plan.mapping_digest, Type::TEXT),
                (&env!("CARGO_PKG_VERSION"), Type::TEXT),
                (&snapshot, Type::TEXT),
            ],
        )
        .await
        .map(|r| r.get(0))
        .map_err(Error::db("recording the run in the target"))
}

/// Closes a run record with its status and manifest. The server adds the link to the last
/// finished run (`previous_manifest_blake3`, see [`super::history`]) and its start and
/// finish times (`started_at`/`finished_at`); returns the stored manifest, parsed and as
/// its text (`jsonb::text`, which is canonical).
pub async fn finish_run(
    client: &Client,
    run_id: i64,
    status: &str,
    manifest: &serde_json::Value,
) -> Result<(serde_json::Value, String), Error> {
    let row = client
        .query_typed_one(
            "WITH now AS (SELECT clock_timestamp() AS t), \
             previous AS (SELECT manifest_blake3 FROM shadan.runs WHERE manifest_blake3 IS NOT NULL \
                 AND run_id OPERATOR(pg_catalog.<) $1 ORDER BY run_id DESC LIMIT 1) \
             UPDATE shadan.runs SET status = $2, finished_at = now.t, \
                 manifest = $3::text::jsonb || jsonb_build_object( \
                     'previous_manifest_blake3', (SELECT manifest_blake3 FROM previous), \
                     'started_at', to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                     'finished_at', to_char(now.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) \
             FROM now WHERE run_id = $1 RETURNING manifest::text",
            &[
                (&run_id, Type::INT8),
                (&status, Type::TEXT),
                (&manifest.to_string(), Type::TEXT),
            ],
        )
        .await
        .map_err(Error::db("recording the end of the run in the target"))?;
    let text: String = row.get(0);
    let stored = serde_json::from_str(&text)
        .map_err(|e| Error::Runtime(format!("the stored manifest is not JSON: {e}")))?;
    Ok((stored, text))
}

/// Stores the digest of a batch's rows as written by sync, inside the transaction that
/// wrote them (overwriting the previous checkpoint).
pub async fn store_digest(
    client: &impl GenericClient,
    target: &QualifiedName,
    batch: &Batch,
    checkpoint: &Checkpoint,
    stamp: Stamp<'_>,
) -> Result<(), Error> {
    let Checkpoint { digest, prints } = checkpoint;
    // Typed, unnamed: one round trip, where a named statement takes two.
    let updated = client
        .execute_typed(
            &format!("UPDATE shadan.batches SET rows = $3, lanes = $4, run_id = $5, horizon = $6, basis = $7, \
                 prints = $8, written_at = pg_catalog.clock_timestamp() \
             WHERE target_table OPERATOR(pg_catalog.=) $1 AND batch_no OPERATOR(pg_catalog.=) $2 AND {LOCK_STILL_HELD}"),
            &[
                (&target.to_string(), Type::TEXT),
                (&batch.no, Type::INT4),
                (&(digest.rows as i64), Type::INT8),
                (&digest.lane_bytes(), Type::BYTEA),
                (&stamp.run_id, Type::INT8),
                (&stamp.horizon, Type::INT8),
                (&stamp.basis, Type::TEXT),
                (&prints.to_bytes(), Type::BYTEA),
            ],
        )
        .await
        .map_err(Error::db(format!("checkpointing {target} {}", batch.describe())))?;
    if updated != 1 {
        return Err(Error::Runtime(format!(
            "{target} {}: this run lost the target's writer lock (its session ended), or the \
             batch's checkpoint is gone; nothing of this batch was kept: run sync again",
            batch.describe()
        )));
    }
    Ok(())
}

/// The row prints of a table's batches, in the order sync meets the batches, as a stream
/// or held in memory ([`PrintsReader::hold`]). Sync reads every batch's prints of every
/// table it reads by changes, whatever changed (see [`RowPrints`]): all of them on one
/// connection, in plan order, before any table is written, so that which session reads
/// which table's prints, and when, does not depend on what changed.
pub struct PrintsReader {
    rows: PrintRows,
    target: QualifiedName,
}

/// Where a [`PrintsReader`]'s rows come from.
enum PrintRows {
    /// Still arriving.
    Stream(std::pin::Pin<Box<tokio_postgres::RowStream>>),
    /// Read in full already: `(batch_no, prints)` in order.
    Held(std::vec::IntoIter<(i32, Option<Vec<u8>>)>),
}

impl PrintRows {
    /// The next `(batch_no, prints)`.
    async fn next(&mut self) -> Result<Option<(i32, Option<Vec<u8>>)>, tokio_postgres::Error> {
        use futures_util::TryStreamExt;
        match self {
            PrintRows::Stream(rows) => Ok(rows
                .try_next()
                .await?
                .map(|row| (row.get(0), row.get::<_, Option<Vec<u8>>>(1)))),
            PrintRows::Held(rows) => Ok(rows.next()),
        }
    }
}

impl PrintsReader {
    /// Starts reading the prints of `target`'s batches `batch_nos`, in that order.
    pub async fn open(
        client: &Client,
        target: &QualifiedName,
        batch_nos: &[i32],
    ) -> Result<Self, Error> {
        let name = target.to_string();
        let nos = batch_nos.to_vec();
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
            [(&name, Type::TEXT), (&nos, Type::INT4_ARRAY)];
        let rows = client
            .query_typed_raw(
                "SELECT batch_no, prints FROM shadan.batches \
                 WHERE target_table OPERATOR(pg_catalog.=) $1 AND batch_no OPERATOR(pg_catalog.=) ANY ($2) \
                 ORDER BY pg_catalog.array_position($2, batch_no)",
                params,
            )
            .await
            .map_err(Error::db(format!("reading the row prints of {target}")))?;
        Ok(Self {
            rows: PrintRows::Stream(Box::pin(rows)),
            target: target.clone(),
        })
    }

    /// Reads the rest of the stream into memory (8 bytes a row), for a worker to take
    /// from later: the connection is free again at once.
    pub async fn hold(mut self) -> Result<Self, Error> {
        let context = || format!("reading the row prints of {}", self.target);
        let mut held = Vec::new();
        while let Some(row) = self.rows.next().await.map_err(Error::db(&context))? {
            held.push(row);
        }
        self.rows = PrintRows::Held(held.into_iter());
        Ok(self)
    }

    /// The prints of batch `batch_no`, passing over those of the batches before it.
    pub async fn take(&mut self, batch_no: i32) -> Result<RowPrints, Error> {
        let context = || format!("reading the row prints of {}", self.target);
        while let Some((no, prints)) = self.rows.next().await.map_err(Error::db(&context))? {
            if no != batch_no {
                continue;
            }
            return prints
                .as_deref()
                .and_then(RowPrints::from_bytes)
                .ok_or_else(|| {
                    Error::Runtime(format!(
                        "{}: batch {batch_no}'s are missing or malformed",
                        context()
                    ))
                });
        }
        Err(Error::Runtime(format!(
            "{}: batch {batch_no} has none (its checkpoint changed while this sync ran)",
            context()
        )))
    }

    /// Reads the rest of the stream, so that every night reads every batch's prints.
    pub async fn finish(mut self) -> Result<(), Error> {
        while self
            .rows
            .next()
            .await
            .map_err(Error::db(format!(
                "reading the row prints of {}",
                self.target
            )))?
            .is_some()
        {}
        Ok(())
    }
}

/// The row prints of one batch, read where a change to the projection (a lost row) needs
/// them.
pub async fn batch_prints(
    client: &impl GenericClient,
    target: &QualifiedName,
    batch_no: i32,
) -> Result<RowPrints, Error> {
    let context = || format!("reading the row prints of {target} batch {batch_no}");
    let row = client
        .query_typed_opt(
            "SELECT prints FROM shadan.batches WHERE target_table OPERATOR(pg_catalog.=) $1 \
             AND batch_no OPERATOR(pg_catalog.=) $2",
            &[(&target.to_string(), Type::TEXT), (&batch_no, Type::INT4)],
        )
        .await
        .map_err(Error::db(&context))?;
    row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
        .and_then(|b| RowPrints::from_bytes(&b))
        .ok_or_else(|| Error::Runtime(format!("{}: they are missing or malformed", context())))
}

/// Adds batches to a table's layout (a split batch's new parts), unwritten.
pub async fn add_batches(
    client: &impl GenericClient,
    target: &QualifiedName,
    batches: &[Batch],
    run_id: i64,
    cut: &LayoutCut,
) -> Result<(), Error> {
    for b in batches {
        client
            .execute(
                "INSERT INTO shadan.batches (target_table, batch_no, lower_key, upper_key, run_id, key_order, projection) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&target.to_string(), &b.no, &b.lower, &b.upper, &run_id, &cut.key_order, &cut.projection],
            )
            .await
            .map_err(Error::db(format!("splitting a batch of {target}")))?;
    }
    Ok(())
}

/// Narrows a batch's range (the first part of a split), keeping it unwritten.
pub async fn narrow_batch(
    client: &impl GenericClient,
    target: &QualifiedName,
    batch: &Batch,
) -> Result<(), Error> {
    client
        .execute(
            "UPDATE shadan.batches SET lower_key = $3, upper_key = $4, rows = NULL, lanes = NULL, horizon = NULL, \
                 prints = NULL \
             WHERE target_table = $1 AND batch_no = $2",
            &[&target.to_string(), &batch.no, &batch.lower, &batch.upper],
        )
        .await
        .map_err(Error::db(format!("splitting a batch of {target}")))?;
    Ok(())
}

/// Moves the horizon of batches whose checkpoint a run found still exact (the source's
/// rows of the batch equal it at the run's snapshot) forward to the run's, without
/// touching their digests. A run that ends before this keeps the older horizons, which
/// only make the next sync read more.
pub async fn confirm_batches(
    client: &Client,
    target: &QualifiedName,
    batch_nos: &[i32],
    stamp: Stamp<'_>,
) -> Result<(), Error> {
    if batch_nos.is_empty() {
        return Ok(());
    }
    client
        .execute_typed(
            &format!(
                "UPDATE shadan.batches SET horizon = $3, basis = $4 \
                 WHERE target_table OPERATOR(pg_catalog.=) $1 AND batch_no OPERATOR(pg_catalog.=) ANY ($2) \
                   AND rows IS NOT NULL AND {}",
                LOCK_STILL_HELD
            ),
            &[
                (&target.to_string(), Type::TEXT),
                (&batch_nos, Type::INT4_ARRAY),
                (&stamp.horizon, Type::INT8),
                (&stamp.basis, Type::TEXT),
                (&stamp.run_id, Type::INT8),
            ],
        )
        .await
        .map_err(Error::db(format!("recording the horizon of {target}")))?;
    Ok(())
}

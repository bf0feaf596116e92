//! The command line: argument definitions, then dispatch to the command that runs them.
//! Every command starts from a validated [`Plan`]; [`open`] is the one way to get one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::catalog::{Catalog, State};
use crate::connect::{Conn, Endpoint, Side};
use crate::error::Error;
use crate::mapping::Mapping;
use crate::plan::{self, Plan, Purpose};

/// shadan (遮断): copies, one way, only the retail-permissible subset of the joint
/// customer database into the retail company's own database, and proves it.
#[derive(Debug, Parser)]
#[command(name = "shadan", version, about, long_about = None,
    after_help = "Example:\n  SHADAN_SOURCE=postgres://shadan@grid/joint SHADAN_TARGET=postgres://shadan@retail/retail \\\n    shadan plan --mapping mappings/retail.toml\n\nExit codes: 0 ok, 1 runtime error, 2 usage error or invalid mapping, 3 verify found differences (history --check: a broken chain), 4 verify found a leak.")]
pub struct Cli {
    /// Connection options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Source (joint, grid-owned) database: postgres URL or key=value string.
    #[arg(long, global = true, env = "SHADAN_SOURCE", hide_env_values = true)]
    pub source: Option<String>,
    /// Target (retail-owned) database: postgres URL or key=value string.
    #[arg(long, global = true, env = "SHADAN_TARGET", hide_env_values = true)]
    pub target: Option<String>,
    /// Log line format on stderr; `json` for job schedulers. RUST_LOG sets the level.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the mapping against both catalogs and show what crosses, by class.
    ///
    /// Example: shadan plan --mapping mappings/retail.toml --json
    Plan(PlanArgs),
    /// Copy every mapped table from one consistent source snapshot, in batches that each
    /// commit with their checkpoint; resumable after a crash.
    ///
    /// Example: shadan cutover --mapping mappings/retail.toml --jobs 4
    Cutover(CutoverArgs),
    /// Prove the target equals the permitted projection of the source and holds nothing
    /// else: blake3 digests from the data itself on both sides, and a leak audit. Trusts
    /// no state written by earlier runs. Exit 0 verified, 3 differences, 4 leak.
    ///
    /// Example: shadan verify --mapping mappings/retail.toml --deep --json
    Verify(VerifyArgs),
    /// Make the target equal to the current permitted projection, writing only what
    /// changed: inserts, updates, deletes, and customers who left the own retailer lose
    /// their own fields. Crash-safe and repeatable; for the nightly job.
    ///
    /// Example: shadan sync --mapping mappings/retail.toml --log-format json
    Sync(SyncArgs),
    /// Print least-privilege SQL for the source DBA: column-level SELECT on exactly the
    /// columns the mapping reads, or with --views security-barrier export views that keep
    /// non-public columns inside the source server.
    ///
    /// Example: shadan grants --mapping mappings/retail.toml --views > grants.sql
    Grants(GrantsArgs),
    /// Write a mapping skeleton from the source catalog (every column non_public), or with
    /// --target-ddl the retail CREATE TABLEs that fit a classified mapping.
    ///
    /// Example: shadan init --schema joint > mapping.toml
    Init(InitArgs),
    /// Past cutover and sync runs from the target's shadan schema (no source needed);
    /// --check walks the chain of manifests and exits 3 at the first break.
    ///
    /// Example: shadan history --limit 7 --check
    History(HistoryArgs),
}

/// `shadan history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print the runs as JSON.
    #[arg(long)]
    pub json: bool,
    /// Walk the chain of manifests (each carries the blake3 of the one before): exit 3,
    /// naming the run, where a past run was deleted or edited.
    #[arg(long)]
    pub check: bool,
}

/// `shadan init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Only tables in this schema (repeatable; default: every user schema).
    #[arg(long = "schema", value_name = "S")]
    pub schemas: Vec<String>,
    /// Only tables whose `schema.table` or `table` matches (`*` and `?`; repeatable).
    #[arg(long = "table", value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Print the retail CREATE TABLE statements for --mapping instead of a skeleton.
    #[arg(long, requires = "mapping")]
    pub target_ddl: bool,
    /// The classified mapping (with --target-ddl).
    #[arg(long)]
    pub mapping: Option<PathBuf>,
}

/// `shadan grants`.
#[derive(Debug, Args)]
pub struct GrantsArgs {
    /// The mapping file.
    #[arg(long)]
    pub mapping: PathBuf,
    /// The login role shadan will connect to the source as.
    #[arg(long, default_value = crate::grants::DEFAULT_ROLE)]
    pub role: String,
    /// Create export views computing the projection inside the source; the role may read
    /// only those (set `source_access = "views"` in the mapping to use them).
    #[arg(long)]
    pub views: bool,
}

/// `shadan sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The mapping file.
    #[arg(long)]
    pub mapping: PathBuf,
    /// Parallel workers; each holds one source and one target connection.
    #[arg(long, default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Rows per batch for tables never copied before; a batch grown past twice this is split.
    #[arg(long, default_value_t = crate::source::batch::DEFAULT_BATCH_ROWS, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: u64,
    /// Print the run manifest (with --dry-run: the preview) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Read both sides like sync and print what it would write, with sample keys;
    /// write nothing (no data, no checkpoint, no run record). The lock is still taken.
    #[arg(long)]
    pub dry_run: bool,
    /// Read every row of every table, as on a first sync, instead of only the rows
    /// written since the last run's snapshot.
    #[arg(long)]
    pub full: bool,
    /// Write an OpenMetrics file for node_exporter's textfile collector (atomically).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Running again when a run fails for a reason that may pass.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `shadan verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The mapping file.
    #[arg(long)]
    pub mapping: PathBuf,
    /// Also search every target text column for values of non-public source fields.
    #[arg(long)]
    pub deep: bool,
    /// Parallel readers per side; each holds one connection.
    #[arg(long, default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write an OpenMetrics file for node_exporter's textfile collector (atomically).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Running again when a run fails for a reason that may pass.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `shadan cutover`.
#[derive(Debug, Args)]
pub struct CutoverArgs {
    /// The mapping file.
    #[arg(long)]
    pub mapping: PathBuf,
    /// Parallel workers; each holds one source and one target connection.
    #[arg(long, default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Rows per batch: the unit of commit, checkpoint and resume.
    #[arg(long, default_value_t = crate::source::batch::DEFAULT_BATCH_ROWS, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: u64,
    /// Copy only this table (source or target name); repeatable.
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Continue an interrupted cutover from its checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Load with the target's indexes in place (by default an empty table's primary key,
    /// unique constraints and indexes are built after its load, which is faster).
    #[arg(long)]
    pub keep_indexes: bool,
    /// Print the run manifest as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write an OpenMetrics file for node_exporter's textfile collector (atomically).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Running again when a run fails for a reason that may pass.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `--retry` and `--retry-wait`, for unattended jobs.
#[derive(Debug, Clone, Copy, Args)]
pub struct RetryArgs {
    /// Run again, up to N times, when the run fails for a reason that may pass: a lost
    /// connection, a server restarting, a serialization failure. Never after a usage
    /// error or a finding. Each retry is logged; a cutover's retries resume it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry: u32,
    /// Seconds before the first retry; each later one waits twice as long, up to 300.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, requires = "retry")]
    pub retry_wait: u64,
}

impl RetryArgs {
    /// The policy these arguments ask for.
    pub fn policy(&self) -> crate::retry::Policy {
        crate::retry::Policy {
            retries: self.retry,
            first_wait: std::time::Duration::from_secs(self.retry_wait),
        }
    }
}

/// Default worker count: two keep a small server busy without crowding a nightly window.
pub const DEFAULT_JOBS: u16 = 2;

/// `shadan plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The mapping file.
    #[arg(long)]
    pub mapping: PathBuf,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the parsed command, then writes its metrics file when one was asked for;
/// returns the process exit code on success.
pub async fn run(cli: Cli) -> Result<u8, Error> {
    let metrics = match &cli.command {
        Command::Cutover(a) => a.metrics_file.clone().map(|p| (p, "cutover")),
        Command::Sync(a) if !a.dry_run => a.metrics_file.clone().map(|p| (p, "sync")),
        Command::Verify(a) => a.metrics_file.clone().map(|p| (p, "verify")),
        _ => None,
    };
    let started = crate::metrics::now();
    let outcome = dispatch(cli).await;
    if let Some((path, command)) = metrics {
        let code = match &outcome {
            Ok(code) => *code,
            Err(e) => e.code(),
        };
        let result = crate::metrics::remembered();
        if let Err(e) = crate::metrics::write(&path, command, started, code, result.as_ref()) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the metrics file");
        }
    }
    outcome
}

/// Runs the command.
async fn dispatch(cli: Cli) -> Result<u8, Error> {
    match cli.command {
        Command::Plan(args) => {
            let (plan, _, _) = open(&cli.global, &args.mapping, Use::Write, 0).await?;
            plan.require_exact_targets()?;
            if args.json {
                println!("{:#}", plan::show::to_json(&plan));
            } else {
                print!("{}", plan::show::to_text(&plan));
            }
            Ok(crate::error::EXIT_OK)
        }
        Command::Cutover(args) => {
            let shutdown = crate::shutdown::Shutdown::on_signals();
            let (global, args) = (&cli.global, &args);
            let manifest =
                crate::retry::run(args.retry.policy(), "cutover", &shutdown, |attempt| {
                    let shutdown = &shutdown;
                    async move {
                        let (plan, source, target) =
                            open(global, &args.mapping, Use::Write, args.jobs.into()).await?;
                        let opts = crate::cutover::Options {
                            jobs: usize::from(args.jobs),
                            batch_rows: args.batch_rows,
                            tables: args.tables.clone(),
                            // A retry continues what the failed attempt committed.
                            resume: args.resume || attempt > 0,
                            keep_indexes: args.keep_indexes,
                            progress: crate::progress::Style::detect(
                                global.log_format == LogFormat::Json,
                            ),
                        };
                        crate::cutover::run(&plan, &source, &target, &opts, shutdown).await
                    }
                })
                .await?;
            crate::metrics::remember(manifest.clone());
            print_manifest(&manifest, args.json);
            Ok(crate::error::EXIT_OK)
        }
        Command::History(args) => {
            let target = Endpoint::new(Side::Target, cli.global.target.as_deref())?;
            let client = target.connect().await?;
            if !crate::target::trust::existing(&client, crate::target::trust::Whose::Writers)
                .await?
            {
                return Err(Error::Usage(format!(
                    "the target {target} has no shadan state: no cutover or sync has run there"
                )));
            }
            let runs = crate::target::history::list(&client, i64::from(args.limit)).await?;
            let (broken, head) = if args.check {
                crate::target::history::check(&client).await?
            } else {
                (None, None)
            };
            if args.json {
                let mut out = serde_json::json!({ "runs": runs });
                if args.check {
                    out["chain"] = serde_json::json!({ "intact": broken.is_none(), "break": broken, "head": head });
                }
                println!("{out:#}");
            } else {
                let chain = args.check.then_some((&broken, &head));
                print!("{}", crate::target::history::to_text(&runs, chain));
            }
            Ok(if broken.is_some() {
                crate::error::EXIT_DIFFERENCES
            } else {
                crate::error::EXIT_OK
            })
        }
        Command::Init(args) => {
            let source = Endpoint::new(Side::Source, cli.global.source.as_deref())?;
            let (client, catalog) = read_catalog(&source, State::Ignored).await?;
            match (&args.mapping, args.target_ddl) {
                (Some(path), true) => {
                    let mapping = Mapping::load(path)?;
                    let ddl = crate::init::target_ddl::script(&mapping, &catalog).map_err(|p| {
                        Error::Usage(format!(
                            "cannot write the retail DDL for {}: {}",
                            path.display(),
                            p.join("; ")
                        ))
                    })?;
                    print!("{ddl}");
                }
                _ => {
                    let database: String = client
                        .query_one("SELECT pg_catalog.current_database()::pg_catalog.text", &[])
                        .await
                        .map_err(Error::db("reading the source database's name"))?
                        .get(0);
                    let selection = crate::init::Selection {
                        schemas: args.schemas,
                        tables: args.tables,
                    };
                    print!("{}", crate::init::skeleton(&catalog, &database, &selection));
                }
            }
            Ok(crate::error::EXIT_OK)
        }
        Command::Grants(args) => {
            let mut mapping = Mapping::load(&args.mapping)?;
            // The script creates the export views, so they need not exist yet.
            mapping.source_access = None;
            let (plan, _, _) = build(&cli.global, &mapping, Use::Grants, 0).await?;
            print!("{}", crate::grants::script(&plan, &args.role, args.views));
            Ok(crate::error::EXIT_OK)
        }
        Command::Sync(args) => {
            let shutdown = crate::shutdown::Shutdown::on_signals();
            let (global, args) = (&cli.global, &args);
            if args.dry_run {
                let report = crate::retry::run(
                    args.retry.policy(),
                    "sync --dry-run",
                    &shutdown,
                    |_| async {
                        let (plan, source, target) =
                            open(global, &args.mapping, Use::Write, args.jobs.into()).await?;
                        crate::sync::preview::run(
                            &plan,
                            &source,
                            &target,
                            args.batch_rows,
                            &shutdown,
                        )
                        .await
                    },
                )
                .await?;
                if args.json {
                    println!("{report:#}");
                } else {
                    print!("{}", crate::sync::preview::summary(&report));
                }
                return Ok(crate::error::EXIT_OK);
            }
            let manifest = crate::retry::run(args.retry.policy(), "sync", &shutdown, |_| async {
                let (plan, source, target) =
                    open(global, &args.mapping, Use::Write, args.jobs.into()).await?;
                let opts = crate::sync::Options {
                    jobs: usize::from(args.jobs),
                    batch_rows: args.batch_rows,
                    progress: crate::progress::Style::detect(global.log_format == LogFormat::Json),
                    full: args.full,
                };
                crate::sync::run(&plan, &source, &target, &opts, &shutdown).await
            })
            .await?;
            crate::metrics::remember(manifest.clone());
            print_manifest(&manifest, args.json);
            Ok(crate::error::EXIT_OK)
        }
        Command::Verify(args) => {
            let shutdown = crate::shutdown::Shutdown::on_signals();
            let (global, args) = (&cli.global, &args);
            // A finding is a report, not an error: only failures to finish are retried.
            let report = crate::retry::run(args.retry.policy(), "verify", &shutdown, |_| async {
                let (plan, source, target) =
                    open(global, &args.mapping, Use::Verify, args.jobs.into()).await?;
                let opts = crate::verify::Options {
                    jobs: usize::from(args.jobs),
                    deep: args.deep,
                    progress: crate::progress::Style::detect(global.log_format == LogFormat::Json),
                };
                crate::verify::run(&plan, &source, &target, &opts, &shutdown).await
            })
            .await?;
            crate::metrics::remember(serde_json::to_value(&report).unwrap_or_default());
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.to_text());
            }
            Ok(report.exit_code())
        }
    }
}

fn print_manifest(manifest: &serde_json::Value, json: bool) {
    if json {
        println!("{manifest:#}");
    } else {
        print!("{}", crate::manifest::summary(manifest));
    }
}

/// What a command builds its plan for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// plan, cutover, sync: the target's state may add keys a cutover set aside.
    Write,
    /// grants: only the source matters; nothing is taken from the target's state.
    Grants,
    /// verify: nothing taken from the target's state, and target drift is read around.
    Verify,
}

/// Loads the mapping, reads both catalogs and builds the plan for `use_`, for a run of
/// `jobs` workers (0: the plan alone).
pub async fn open(
    global: &GlobalArgs,
    mapping: &std::path::Path,
    use_: Use,
    jobs: usize,
) -> Result<(Plan, Endpoint, Endpoint), Error> {
    build(global, &Mapping::load(mapping)?, use_, jobs).await
}

/// Reads both catalogs and builds the plan of a loaded mapping; checks its bound values
/// against the source's column types. Meanwhile opens the connections a run of `jobs`
/// workers holds at once, on both sides in parallel ([`Endpoint::warm`]).
async fn build(
    global: &GlobalArgs,
    mapping: &Mapping,
    use_: Use,
    jobs: usize,
) -> Result<(Plan, Endpoint, Endpoint), Error> {
    let source = Endpoint::new(Side::Source, global.source.as_deref())?;
    let target = Endpoint::new(Side::Target, global.target.as_deref())?;
    let (state, purpose) = match use_ {
        Use::Write => (State::Trusted, Purpose::Write),
        Use::Grants => (State::Ignored, Purpose::Write),
        Use::Verify => (State::Ignored, Purpose::Verify),
    };
    // Besides the catalogs' two: a writing run's source holds the snapshot's two
    // sessions (and the layout's), two per worker and, while a sync's first workers open,
    // one per worker counting what changed; its target the lock, one per worker and a
    // spare (a sync's row prints reader, the end of a cutover); a verify one per worker
    // and side and a spare.
    // No more workers than tables are sure to be busy (a sync by changes takes a table a
    // worker); a run that finds more work opens more connections as it needs them.
    let jobs = jobs.min(mapping.tables.len());
    let (source_more, target_more) = match (use_, jobs) {
        (_, 0) | (Use::Grants, _) => (0, 0),
        (Use::Write, _) => (3 * jobs + 2, 2 * jobs),
        (Use::Verify, _) => (jobs + 1, jobs + 1),
    };
    let ((source_client, source_catalog), (_, target_catalog), (), ()) = tokio::try_join!(
        read_catalog(&source, State::Ignored),
        read_catalog(&target, state),
        async { Ok(source.warm(source_more).await?) },
        async { Ok(target.warm(target_more).await?) },
    )?;
    let plan = Plan::build(mapping, &source_catalog, &target_catalog, purpose)?;
    for drift in &plan.target_drift {
        tracing::warn!(
            "the target differs from the mapping, verify reads around it: {}",
            crate::ident::escape_controls(&drift.to_string())
        );
    }
    crate::plan::bound::check(&plan, &source_client).await?;
    Ok((plan, source, target))
}

async fn read_catalog(endpoint: &Endpoint, state: State) -> Result<(Conn, Catalog), Error> {
    let client = endpoint.connect().await?;
    let catalog = Catalog::read(&client, state)
        .await
        .map_err(Error::db(format!("reading the {} catalog", endpoint.side)))?;
    Ok((client, catalog))
}

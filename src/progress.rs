//! Progress of a copy, per table: indicatif bars on a terminal, a plain line every few
//! seconds otherwise, JSON log events with `--log-format json`. Only table names and
//! counts are shown, never row values.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain or JSON progress line is written when not on a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How often bars are refreshed on a terminal.
const BAR_INTERVAL: Duration = Duration::from_millis(200);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// indicatif bars on stderr.
    Bars,
    /// A plain text line on stderr every few seconds.
    Lines,
    /// A tracing event every few seconds (JSON logs).
    Events,
}

impl Style {
    /// Bars when stderr is a terminal and logs are text; lines or events otherwise.
    pub fn detect(json_logs: bool) -> Self {
        if json_logs {
            Style::Events
        } else if std::io::stderr().is_terminal() {
            Style::Bars
        } else {
            Style::Lines
        }
    }
}

/// Counters one table's workers add to.
#[derive(Debug)]
pub struct TableCounter {
    /// The table's name as shown.
    pub name: String,
    /// Rows expected (0 when unknown).
    pub total: u64,
    /// Rows done so far, by this run and earlier ones.
    pub done: AtomicU64,
    /// Rows earlier runs had done (a resumed cutover): rates count only this run's.
    pub before: u64,
}

/// A running progress display; stop it with [`Progress::finish`].
pub struct Progress {
    counters: Vec<Arc<TableCounter>>,
    task: tokio::task::JoinHandle<()>,
    stop: Arc<tokio::sync::Notify>,
}

impl Progress {
    /// Starts showing progress of `verb` for tables `(name, expected rows, rows already done)`.
    pub fn start(verb: &'static str, style: Style, tables: Vec<(String, u64, u64)>) -> Self {
        let counters: Vec<Arc<TableCounter>> = tables
            .into_iter()
            .map(|(name, total, done)| {
                Arc::new(TableCounter {
                    name,
                    total,
                    done: AtomicU64::new(done),
                    before: done,
                })
            })
            .collect();
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(show(verb, style, counters.clone(), stop.clone()));
        Self {
            counters,
            task,
            stop,
        }
    }

    /// The counter of table `i` (in the order given to `start`).
    pub fn counter(&self, i: usize) -> Arc<TableCounter> {
        self.counters[i].clone()
    }

    /// Stops the display after a last update.
    pub async fn finish(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

async fn show(
    verb: &'static str,
    style: Style,
    counters: Vec<Arc<TableCounter>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let started = Instant::now();
    let bars =
        (style == Style::Bars).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar_style = ProgressStyle::with_template(
            "{prefix:<28} {bar:30.cyan/blue} {human_pos:>11}/{human_len:<11} {rate:>14} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} rows/s", state.per_sec());
        });
            counters
                .iter()
                .map(|c| {
                    let bar = multi.add(ProgressBar::new(c.total));
                    bar.set_style(bar_style.clone());
                    bar.set_prefix(c.name.clone());
                    // Rows of earlier runs are there from the start, not this run's speed.
                    bar.set_position(c.before);
                    bar.reset_eta();
                    bar
                })
                .collect::<Vec<_>>()
        });
    let interval = if bars.is_some() {
        BAR_INTERVAL
    } else {
        LINE_INTERVAL
    };
    let mut last_line = vec![0u64; counters.len()];
    loop {
        let stopped = tokio::select! {
            _ = stop.notified() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        for (i, c) in counters.iter().enumerate() {
            let done = c.done.load(Ordering::Relaxed);
            // A table that grew since it was counted: its total is what has been seen.
            let total = c.total.max(done);
            match (&bars, style) {
                (Some(bars), _) => {
                    bars[i].set_length(total);
                    bars[i].set_position(done);
                    if stopped {
                        bars[i].finish();
                    }
                }
                (None, _) if done == last_line[i] && !stopped => {}
                (None, Style::Events) => {
                    let this_run = done.saturating_sub(c.before);
                    tracing::info!(table = %c.name, rows = done, rows_this_run = this_run, total, elapsed_s = elapsed, "{verb} progress");
                }
                (None, _) => {
                    let of = if total == 0 {
                        String::new()
                    } else {
                        format!("/{total}")
                    };
                    let this_run = done.saturating_sub(c.before);
                    eprintln!(
                        "shadan {verb}: {} {done}{of} rows{} ({this_run} this run, {:.0} rows/s)",
                        c.name,
                        percent(done, total),
                        this_run as f64 / elapsed
                    );
                }
            }
            last_line[i] = done;
        }
        if stopped {
            return;
        }
    }
}

fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        String::new()
    } else {
        format!(" {:.0}%", done as f64 * 100.0 / total as f64)
    }
}

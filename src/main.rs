//! The `shadan` binary: parse, run, map the result to the contract's exit code.

use std::process::ExitCode;

use clap::Parser;
use shadan::cli::{Cli, LogFormat};

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    let json_logs = cli.global.log_format == LogFormat::Json;
    init_logging(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shadan: cannot start the async runtime: {e}");
            return ExitCode::from(shadan::error::EXIT_RUNTIME);
        }
    };
    match runtime.block_on(shadan::cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json_logs {
                tracing::error!(exit_code = e.code(), "{e}");
            } else if let shadan::error::Error::Invalid(problems) = &e {
                // One line per problem, each escaped already.
                eprintln!("shadan: {problems}");
            } else {
                // Names in a message come from catalogs others write: no line of theirs.
                eprintln!("shadan: {}", shadan::ident::escape_controls(&e.to_string()));
            }
            e.exit_code()
        }
    }
}

/// A panic prints where it happened, never its message: a payload could carry a
/// connection string or a row value that was being handled.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("shadan: internal error{place} (details withheld: they may hold values); please report it");
    }));
}

/// Log targets that never reach the logs, at any `RUST_LOG` level: the driver's debug
/// lines include bound parameters (key values, the `--deep` fingerprints), and its info
/// lines relay server NOTICEs, which functions on the server can fill with anything.
const SILENCED: &[&str] = &["tokio_postgres=off", "postgres_protocol=off"];

/// Logs go to stderr; stdout carries only results. `RUST_LOG` overrides the level.
fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shadan=info"));
    for directive in SILENCED {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    // Colour only for a person at a terminal: a cron log or a journal gets plain text,
    // and NO_COLOR (any value but empty) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

//! The `shadan` binary: parse, run, map the result to the contract's exit code.

use std::process::ExitCode;

use clap::Parser;
use shadan::cli::{Cli, LogFormat};

fn main() -> ExitCode {
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
            } else {
                eprintln!("shadan: {e}");
            }
            e.exit_code()
        }
    }
}

/// Logs go to stderr; stdout carries only results. `RUST_LOG` overrides the level.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shadan=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

//! The command line: `incidentd run` and `incidentd check`.
//!
//! Exit codes: 0 success, 64 (EX_USAGE) bad configuration (before any port is
//! bound), 1 a runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, LogConfig, LogFormat, Overrides};

pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "incidentd",
    version,
    about = "Turns monitoring alerts into ITIL incidents."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Listen address, overriding `http.listen`.
        #[arg(long)]
        listen: Option<String>,
        /// `memory` or `redis://HOST:PORT/DB`, overriding `store.url`.
        #[arg(long)]
        store: Option<String>,
    },
    /// Validate a config file, print every error with file:line, and exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs a parsed command line to completion.
pub fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => match config::load(&config, &Overrides::default()) {
            Ok(c) => {
                println!(
                    "{}: ok ({} webhook endpoints, store {})",
                    config.display(),
                    c.webhook.endpoints.len(),
                    match c.store {
                        config::StoreSettings::Memory { .. } => "memory",
                        config::StoreSettings::Redis(_) => "redis",
                    }
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} error(s)", errors.0.len());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run {
            config,
            listen,
            store,
        } => {
            let config = match config::load(&config, &Overrides { listen, store }) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_tracing(&config.log);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "incidentd failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

//! The command line: `incidentd run`, `check`, `test` and `replay`.
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
        /// Threads running the pipeline; one per CPU by default. On a machine
        /// whose Redis shares the CPUs, run one fewer than the CPUs, leaving
        /// Redis a core: on 2 cores, 1 thread ingested 23 % more alerts/s flat
        /// out than 2 (BENCHMARKS.md).
        #[arg(long, env = "INCIDENTD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        worker_threads: Option<u16>,
    },
    /// Validate a config file and its rules, print every error with file:line, and exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run rule unit tests (files, or directories of *.yaml).
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Feed recorded alerts through the rules (memory store, recorded clock) and
    /// print the incidents that would be raised. Nothing is sent anywhere.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// JSON lines: `{"received_at": ..., "body": payload}` or bare payloads.
        input: PathBuf,
        /// Print a JSON array of incidents, as `GET /api/v1/incidents/{id}` returns them.
        #[arg(long)]
        json: bool,
        /// Also show why each alert went where it went (with --json: an object
        /// `{"incidents": [...], "alerts": [...]}`).
        #[arg(long)]
        explain: bool,
    },
}

/// Runs a parsed command line to completion.
pub fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            listen,
            store,
            worker_threads,
        } => {
            let Some((config, rules)) = load(&config, Overrides { listen, store }) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            init_tracing(&config.log);
            block_on_threads(worker_threads.map(usize::from), async move {
                match crate::daemon::run(config, rules).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "incidentd failed");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Test { paths } => block_on(async move {
            let mut all = crate::ruletest::Report::default();
            for path in &paths {
                let r = crate::ruletest::run_path(path, None).await;
                all.passed += r.passed;
                all.failures.extend(r.failures);
            }
            if all.passed() {
                println!("{}", all.render());
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", all.render());
                ExitCode::FAILURE
            }
        }),
        Command::Replay {
            config,
            input,
            json,
            explain,
        } => {
            let Some((config, rules)) = load(&config, Overrides::default()) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            block_on(async move {
                match crate::replay::replay(&input, std::sync::Arc::new(rules), Some(&config)).await
                {
                    Ok(result) => {
                        let printed = match (json, explain) {
                            (true, false) => serde_json::to_string_pretty(&result.incidents),
                            (true, true) => serde_json::to_string_pretty(&result),
                            (false, _) => Ok(crate::replay::render_table(&result, explain)),
                        };
                        match printed {
                            Ok(text) => {
                                println!("{text}");
                                for s in &result.skipped {
                                    eprintln!("skipped {s}");
                                }
                                ExitCode::SUCCESS
                            }
                            Err(e) => {
                                eprintln!("cannot print the result: {e}");
                                ExitCode::FAILURE
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("replay failed: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let (config, rules) = match config::load(path, &Overrides::default()) {
        Ok(c) => {
            let rules = crate::daemon::load_rules(&c);
            (Ok(c), rules)
        }
        Err(e) => (Err(e), Ok(crate::rules::RuleSet::empty())),
    };
    let mut errors = 0;
    if let Err(e) = &config {
        eprintln!("{e}");
        errors += e.0.len();
    }
    if let Err(e) = &rules {
        eprintln!("{e}");
        errors += e.0.len();
    }
    match (config, rules) {
        (Ok(c), Ok(r)) => {
            println!(
                "{}: ok ({} rules, {} webhook endpoints, {} adapters, store {}{})",
                path.display(),
                r.len(),
                c.webhook.endpoints.len(),
                c.adapters.len(),
                match c.store {
                    config::StoreSettings::Memory { .. } => "memory",
                    config::StoreSettings::Redis(_) => "redis",
                },
                c.topology
                    .as_ref()
                    .map(|t| format!(", {} services", t.len()))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{errors} error(s)");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The validated config and its rules, or `None` after printing every error.
fn load(
    path: &std::path::Path,
    overrides: Overrides,
) -> Option<(config::Config, crate::rules::RuleSet)> {
    let config = match config::load(path, &overrides) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return None;
        }
    };
    match crate::daemon::load_rules(&config) {
        Ok(rules) => Some((config, rules)),
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}

fn block_on(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    block_on_threads(None, fut)
}

/// Runs `fut` on a multi-threaded runtime of `threads` workers (tokio's
/// default, one per CPU or `TOKIO_WORKER_THREADS`, when `None`).
fn block_on_threads(
    threads: Option<usize>,
    fut: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    match builder.build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
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

//! The `pointsman` command line: a thin layer over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pointsman::config::{self, Diagnostic};
use pointsman::router::compile::{self, CompileEnv, Compiled};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Content-based routing reverse proxy.
#[derive(Parser, Debug)]
#[command(name = "pointsman", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve until SIGTERM/SIGINT; SIGHUP reloads the rule files.
    Run {
        /// A rule file or a directory of them.
        #[arg(long, default_value = "routes")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        #[arg(long, value_enum, default_value = "on")]
        access_log: OnOff,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Validate the rule files as `run` would load them.
    Check {
        #[arg(long, default_value = "routes")]
        config: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

/// Exit code for an invalid or missing config.
const EXIT_CONFIG: u8 = 1;
/// Exit code for a runtime failure (e.g. cannot bind).
const EXIT_RUNTIME: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { .. } => {
            eprintln!("error: run is not available yet");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Loads and compiles, printing every diagnostic; `None` after errors.
fn load_config(path: &Path) -> Option<Compiled> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(errors) => {
            print_diagnostics(&errors);
            return None;
        }
    };
    match compile::compile(&loaded, CompileEnv::default()) {
        Ok(c) => Some(c),
        Err(errors) => {
            print_diagnostics(&errors);
            None
        }
    }
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        println!("{d}");
    }
}

fn check(path: &Path) -> ExitCode {
    let Some(compiled) = load_config(path) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let s = compiled.summary;
    println!(
        "ok: {} routes, {} upstreams, {} experiments, {} canaries",
        s.routes, s.upstreams, s.experiments, s.canaries
    );
    print_diagnostics(&compiled.warnings);
    ExitCode::SUCCESS
}

/// Sets up `tracing`: `POINTSMAN_LOG` filters (default `info`), text or
/// JSON lines on stderr; `access_log` off silences the `access` target.
fn init_logging(format: LogFormat, access_log: OnOff) {
    use tracing_subscriber::EnvFilter;
    let mut filter =
        EnvFilter::try_from_env("POINTSMAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if access_log == OnOff::Off {
        if let Ok(d) = "access=off".parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

#[allow(dead_code)]
fn runtime<T>(r: anyhow::Result<T>) -> Result<T, ExitCode> {
    r.context("runtime failure").map_err(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

//! The `pointsman` command line: a thin layer over the library.

use clap::{Parser, Subcommand};
use pointsman::app::{self, RunError, RunOptions};
use pointsman::compile::Compiled;
use pointsman::config::Diagnostic;
use pointsman::explain::{self, ExplainRequest};
use pointsman::logging::LogGuard;
use pointsman::reload;
use pointsman::runtime::StartingState;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod commands;

/// Content-based routing reverse proxy.
#[derive(Parser, Debug)]
#[command(name = "pointsman", version = pointsman::version::LONG, about)]
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
        /// Serving threads, each with its own event loop (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Validate the rule files as `run` would load them.
    Check {
        #[arg(long, default_value = "routes")]
        config: PathBuf,
    },
    /// Show how a request would be routed, without contacting any upstream.
    Explain {
        #[arg(long, default_value = "routes")]
        config: PathBuf,
        /// The method.
        #[arg(short = 'X', default_value = "GET")]
        method: String,
        /// A header, `Name: value` (repeatable).
        #[arg(short = 'H')]
        header: Vec<String>,
        /// The client address (default 127.0.0.1).
        #[arg(long)]
        client_ip: Option<IpAddr>,
        /// The request body.
        #[arg(long)]
        data: Option<String>,
        /// Print the trace as JSON.
        #[arg(long)]
        json: bool,
        /// `http://host/path?query` or `/path?query`.
        url: String,
    },
    /// Print the variant and bucket of ids, or the shares over a sample.
    Assign {
        #[arg(long, default_value = "routes")]
        config: PathBuf,
        #[arg(long)]
        experiment: String,
        /// Assign N random ids and print the observed shares.
        #[arg(long, conflicts_with = "ids")]
        sample: Option<usize>,
        #[arg(required_unless_present = "sample")]
        ids: Vec<String>,
    },
    /// Compare two configs: routes, and who changes variant.
    Diff {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        against: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        sample: usize,
        /// Exit 1 when anything differs (as `git diff --exit-code`).
        #[arg(long)]
        exit_code: bool,
    },
    /// Run the proxy on routes/demo.yaml with two built-in upstreams.
    Demo {
        #[arg(long, value_enum, default_value = "on")]
        access_log: OnOff,
    },
    /// Ask the running proxy (found through the config's `admin.bind` and
    /// `admin.token_file`) to reload: exit 0 reloaded, 1 refused, 3 no
    /// proxy answered.
    Reload {
        #[arg(long, default_value = "routes")]
        config: PathBuf,
    },
    /// Exit 0 when the running proxy (found as for `reload`) is ready
    /// (`GET /readyz` answers 200), else 1: a container HEALTHCHECK.
    Health {
        #[arg(long, default_value = "routes")]
        config: PathBuf,
    },
    /// Print the JSON Schema (draft 2020-12) of a rule file.
    Schema,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
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
/// Exit code for a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit code for a runtime failure (e.g. cannot bind).
const EXIT_RUNTIME: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            log_format,
            access_log,
            threads,
        } => {
            let _log = init_logging(log_format, access_log);
            serve(RunOptions {
                config,
                threads: app::serving_threads(threads),
            })
        }
        Command::Explain {
            config,
            method,
            header,
            client_ip,
            data,
            json,
            url,
        } => explain_cmd(&config, method, &header, client_ip, data, json, url),
        Command::Assign {
            config,
            experiment,
            sample,
            ids,
        } => match load_config(&config) {
            None => ExitCode::from(EXIT_CONFIG),
            Some(c) => commands::assign(&c.config, &experiment, sample, &ids),
        },
        Command::Diff {
            config,
            against,
            sample,
            exit_code,
        } => match (load_config(&config), load_config(&against)) {
            (Some(old), Some(new)) => commands::diff(&old.config, &new.config, sample, exit_code),
            _ => ExitCode::from(EXIT_CONFIG),
        },
        Command::Demo { access_log } => {
            let _log = init_logging(LogFormat::Text, access_log);
            demo()
        }
        Command::Reload { config } => commands::reload(&config),
        Command::Health { config } => commands::health(&config),
        Command::Schema => {
            print!("{}", pointsman::config::schema::rule_file_json());
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "pointsman", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Loads and compiles, printing every diagnostic; `None` after errors.
fn load_config(path: &Path) -> Option<Compiled> {
    match reload::load_and_compile(path) {
        Ok(loaded) => Some(loaded.compiled),
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

fn explain_cmd(
    config: &Path,
    method: String,
    headers: &[String],
    client_ip: Option<IpAddr>,
    data: Option<String>,
    json: bool,
    url: String,
) -> ExitCode {
    let mut parsed = Vec::with_capacity(headers.len());
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            eprintln!("error: header {h:?} is not `Name: value`");
            return ExitCode::from(EXIT_USAGE);
        };
        parsed.push((name.trim().to_string(), value.trim().to_string()));
    }
    let Some(compiled) = load_config(config) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let req = ExplainRequest {
        method,
        url,
        headers: parsed,
        client_ip,
        body: data.map(String::into_bytes),
    };
    match explain::explain(&compiled.config, &StartingState, &req) {
        Ok(trace) if json => {
            match serde_json::to_string_pretty(&trace) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: {e}"),
            }
            ExitCode::SUCCESS
        }
        Ok(trace) => {
            print!("{}", trace.to_text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs the proxy on a tokio runtime.
fn serve(opts: RunOptions) -> ExitCode {
    let runtime = match app::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(async { app::start(&opts).await?.serve().await });
    exit_code(result)
}

/// Maps how `run` (or `demo`) ended to the exit code SPEC 1 gives it.
fn exit_code(result: Result<(), RunError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(errors)) => {
            print_diagnostics(&errors);
            ExitCode::from(EXIT_CONFIG)
        }
        Err(RunError::Runtime(e)) => {
            eprintln!("error: {e}");
            tracing::error!("{e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn demo() -> ExitCode {
    let config = match commands::demo_config() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let runtime = match app::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let upstreams = runtime.block_on(async {
        let v1 = pointsman::demo::bind_upstream("v1", pointsman::demo::V1).await?;
        let v2 = pointsman::demo::bind_upstream("v2", pointsman::demo::V2).await?;
        Ok::<_, std::io::Error>((v1, v2))
    });
    if let Err(e) = upstreams {
        eprintln!("error: cannot start the demo upstreams on 127.0.0.1:9001/9002: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    let opts = RunOptions {
        config,
        threads: app::serving_threads(None),
    };
    let result = runtime.block_on(async {
        let started = app::start(&opts).await?;
        commands::print_demo_banner(&opts.config, &started.bound);
        started.serve().await
    });
    exit_code(result)
}

/// Sets up `tracing`: `POINTSMAN_LOG` filters (default `info`), text or
/// JSON lines on stderr, written by the log thread
/// ([`pointsman::logging`]); `access_log` off silences the `access`
/// target. Keep the guard until exit: dropping it writes what is queued.
fn init_logging(format: LogFormat, access_log: OnOff) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let mut filter =
        EnvFilter::try_from_env("POINTSMAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if access_log == OnOff::Off
        && let Ok(d) = "access=off".parse()
    {
        filter = filter.add_directive(d);
    }
    let (writer, guard) = pointsman::logging::stderr_writer();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    guard
}

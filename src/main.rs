//! `shopflow`: the one binary. `demo` runs everything in process; `run` runs against
//! Kafka and Redis; `gen` writes a workload; `bench` measures throughput; `token` mints an
//! API token; `load` puts a running API under concurrent load.

/// Writes an operator's status line (progress, "API on …", "finished: …") to stderr: as is,
/// or with `--log-format json` as a JSON object like the log lines (level INFO).
macro_rules! say {
    ($($t:tt)*) => {
        $crate::status_line(&format!($($t)*))
    };
}

mod bench;
mod config;
mod hints;
mod load;
mod token;
mod wiring;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc instead of the system allocator: the dataflow allocates and frees small
/// vectors all the time, and glibc's malloc took about a third of a worker's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (Linux). mimalloc asks for huge pages on
/// its arenas, and the kernel then clears a whole 2 MiB page on the first touch of any part
/// of it, again after every purge: on a 1M-event run that was a quarter to half of all CPU
/// samples (`clear_page_erms`), and the run took 1.3× as long (docs/performance.md). A
/// failure (an old kernel) only costs that time, so it is not an error.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("note: transparent huge pages stay on ({e})");
    }
}

#[derive(Parser)]
#[command(
    name = "shopflow",
    version,
    about = "Streaming views for a marketplace: Kafka in, Redis/MySQL/ClickHouse out."
)]
struct Cli {
    /// Log lines as text (colour only on a terminal) or as JSON objects, one per line, for
    /// log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SHOPFLOW_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// See [`Cli::log_format`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, `target`).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Generator → pipeline → in-process stores → API on localhost, no external services.
    Demo(wiring::DemoArgs),
    /// Run the pipeline on Kafka (or a JSON-lines file) into Redis and Kafka, with the API.
    Run(Box<wiring::RunArgs>),
    /// Write a generated workload to a JSON-lines file or to Kafka.
    Gen(wiring::GenArgs),
    /// Measure decode + pipeline throughput against the raw read rate of the same input.
    Bench(bench::BenchArgs),
    /// Print a signed API token (HS256 JWT) for a role, e.g. `--role seller --seller-id 7`.
    Token(token::TokenArgs),
    /// Check a configuration file (`config check FILE`) or print the effective
    /// configuration of `run` with where each value came from (`config show [run flags]`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Concurrent GETs at a running API (bounded in count and time): throughput, latency
    /// percentiles, counts by status; fails on any error, 5xx or unexpected answer.
    Load(load::LoadArgs),
    /// List the checkpoints of a state directory, newest first: whether each can be used,
    /// where it stands, and what its bytes are made of.
    Checkpoints(wiring::CheckpointsArgs),
}

/// `shopflow config …`
#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE (keys, types, ranges) without starting anything.
    Check(CheckArgs),
    /// Print every setting of `run` as it would start (flags, environment, `--config` file,
    /// defaults), with its origin; secrets redacted.
    Show(Box<wiring::RunArgs>),
}

/// `shopflow config check`
#[derive(Args)]
struct CheckArgs {
    /// The configuration file.
    file: std::path::PathBuf,
}

/// The log filter without `SHOPFLOW_LOG`: warnings, plus the one-line reports of a sink or
/// the source recovering from an outage. librdkafka's own error lines are left out: during
/// a broker outage it reports every reconnection attempt, and the source reports the outage
/// once (`SHOPFLOW_LOG=warn,rdkafka=debug` shows them).
const DEFAULT_LOG: &str = "warn,rdkafka=off,librdkafka=off,shopflow_model::retry=info,\
                           shopflow_sinks::writer=info,shopflow_pipelines::runtime=info";

/// In a cluster, a peer that stops breaks timely's connections: its network threads and
/// then every worker panic. The run reports that once, as an error naming what to do
/// (`PipelineError::PeerLost`); the panics themselves get one log line, not a backtrace
/// each.
fn quiet_network_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if shopflow_pipelines::runtime::is_network_failure(message) {
            let thread = std::thread::current();
            tracing::debug!(
                thread = thread.name().unwrap_or("?"),
                "{message} (a process of the cluster stopped)"
            );
        } else {
            default(info);
        }
    }));
}

fn main() {
    no_huge_pages();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("SHOPFLOW_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG))
    };
    match cli.log_format {
        LogFormat::Text => {
            // Colour only on a terminal: log files and journald get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt()
                .with_ansi(ansi)
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .init();
        }
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .init()
        }
    }
    quiet_network_panics();
    // The matches of `run` / `config show`: where each flag's value came from.
    let run_matches = || {
        matches
            .subcommand_matches("run")
            .cloned()
            .unwrap_or_default()
    };
    let show_matches = || {
        matches
            .subcommand_matches("config")
            .and_then(|m| m.subcommand_matches("show"))
            .cloned()
            .unwrap_or_default()
    };
    let result = match cli.command {
        Command::Demo(a) => wiring::demo(a),
        Command::Run(a) => with_config(*a, &run_matches()).and_then(|(a, _)| wiring::run(a)),
        Command::Config(ConfigCommand::Check(c)) => config::FileConfig::load(&c.file).map(|_| {
            println!("{}: ok", c.file.display());
        }),
        Command::Config(ConfigCommand::Show(a)) => {
            with_config(*a, &show_matches()).map(|(_, settings)| {
                for s in settings {
                    println!("{:<32} {:<8} {}", s.key, s.origin.as_str(), s.value);
                }
            })
        }
        Command::Gen(a) => wiring::gen(a),
        Command::Bench(a) => bench::bench(a),
        Command::Token(a) => token::token(a),
        Command::Load(a) => load::load(a),
        Command::Checkpoints(a) => wiring::checkpoints(a),
    };
    if let Err(e) = result {
        match cli.log_format {
            LogFormat::Text => eprintln!("shopflow: {}", one_line(&e)),
            LogFormat::Json => eprintln!(
                "{}",
                serde_json::json!({"level": "ERROR", "fields": {"message": one_line(&e)},
                                   "target": "shopflow"})
            ),
        }
        std::process::exit(1);
    }
}

/// Whether log and status lines are JSON (`--log-format json`), set once at start.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// See [`say!`].
pub(crate) fn status_line(message: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "{}",
            serde_json::json!({"timestamp": shopflow_model::time::rfc3339_utc(now_ms()), "level": "INFO",
                               "fields": {"message": message}, "target": "shopflow"})
        );
    } else {
        eprintln!("{message}");
    }
}

/// `args` with what flags and the environment left unset taken from its `--config` file
/// (if any), and every setting with its origin.
fn with_config(
    mut args: wiring::RunArgs,
    matches: &clap::ArgMatches,
) -> anyhow::Result<(wiring::RunArgs, Vec<config::Setting>)> {
    let file = match &args.config {
        Some(path) => config::FileConfig::load(path)?,
        None => config::FileConfig::default(),
    };
    let settings = config::merge(&mut args, &file, matches)?;
    Ok((args, settings))
}

/// An error and its causes on one line, each cause once (library errors often repeat their
/// source's text in their own message, and `{:#}` would print it again), then what to do
/// about it when the binary knows ([`hints`]).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    if let Some(hint) = hints::hint(e) {
        line.push_str(" (");
        line.push_str(&hint);
        line.push(')');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(io).context("cannot read /x.jsonl: No such file or directory");
        assert_eq!(
            one_line(&e),
            "cannot read /x.jsonl: No such file or directory"
        );
        let io = std::io::Error::other("refused");
        let e = anyhow::Error::new(io)
            .context("connecting")
            .context("starting");
        assert_eq!(one_line(&e), "starting: connecting: refused");
    }
}

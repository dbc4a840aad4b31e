//! `party`: use a party data directory from the shell.
//!
//! `party [--backend B] [--encoding utf8|json|hex] [--no-retry] DIR COMMAND`, where COMMAND
//! is get, put, del, batch, clear, scan, status or shell; and `party demo [DIR]`.
//! Exit codes: 0 ok, 1 key not found (get), 2 usage, 3 any other error (one line on stderr).

mod bench;
mod chaos;
mod command;
mod demo;
mod encoding;
mod shell;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use party_core::{open, BackendKind, Options};

use command::{Failure, Op, Outcome};
use encoding::Encoding;

/// Open one key-value store from many processes at once.
#[derive(Debug, Parser)]
#[command(
    name = "party",
    version,
    after_help = "Also: party demo [--backend B] [DIR]"
)]
struct Cli {
    /// The store, if more than one is compiled in: fjall, sled or rocksdb.
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendKind>,
    /// How keys and values are written and printed.
    #[arg(long, value_enum, default_value = "utf8")]
    encoding: Encoding,
    /// Fail in-flight operations when the leader is lost instead of re-sending them.
    #[arg(long)]
    no_retry: bool,
    /// The data directory (created if missing).
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Op(Op),
    /// Keep one handle open and run commands from stdin, one per line.
    Shell {
        /// Print one JSON object per command (see the README for the schema).
        #[arg(long)]
        json: bool,
    },
}

/// Opens `dir` on `backend`, for the demo, the bench and the chaos run.
pub(crate) async fn open_on(
    dir: impl AsRef<std::path::Path>,
    backend: BackendKind,
) -> Result<party_core::Db, String> {
    let options = Options::default().backend(backend);
    open(dir, options).await.map_err(|e| e.to_string())
}

/// Opens DIR on the named store, for the child processes of the demo, the bench and chaos.
pub(crate) async fn open_child(dir: &str, backend: &str) -> Result<party_core::Db, String> {
    open_on(dir, parse_backend(backend)?).await
}

/// Reads a child's output a line at a time on a thread of its own, and hands each line,
/// made into a report by `report`, to `lines`, until either end goes away.
pub(crate) fn forward_lines<T: Send + 'static>(
    child: &mut std::process::Child,
    lines: &std::sync::mpsc::Sender<T>,
    report: impl Fn(String) -> T + Send + 'static,
) -> Result<(), String> {
    use std::io::BufRead;
    let stdout = child
        .stdout
        .take()
        .ok_or("the child's output is not piped")?;
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(report(line)).is_err() {
                return;
            }
        }
    });
    Ok(())
}

pub(crate) fn parse_backend(name: &str) -> Result<BackendKind, String> {
    name.parse()
        .map_err(|e: party_core::UnknownBackend| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("party: cannot start: {error}");
            return ExitCode::from(3);
        }
    };
    if let Some(role) = args.get(1).and_then(|a| demo::role(a)) {
        return runtime.block_on(demo::main(role, &args[1..]));
    }
    let special = match args.get(1).map(String::as_str) {
        Some("bench") => Some(runtime.block_on(bench_main(&args[1..]))),
        Some("__bench-echo") => Some(bench::echo(&args[1..])),
        Some("__bench-node") => Some(runtime.block_on(bench::node(&args[1..]))),
        Some("chaos") => Some(runtime.block_on(chaos::run(&args[1..]))),
        Some("__chaos-worker") => Some(runtime.block_on(chaos::worker(&args[1..]))),
        _ => None,
    };
    if let Some(result) = special {
        return result.unwrap_or_else(|message| {
            eprintln!("party {}: {message}", args[1].trim_start_matches('_'));
            ExitCode::from(3)
        });
    }
    let cli = Cli::parse();
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let mut options = Options::default().retry(!cli.no_retry);
    if let Some(backend) = cli.backend {
        options.backend = backend;
    }
    let result = async {
        let db = open(&cli.dir, options).await?;
        db.ready().await?;
        let outcome = match &cli.command {
            Command::Op(Op::Scan(scan)) => command::stream_scan(&db, cli.encoding, scan)
                .await
                .map(|()| None),
            Command::Op(op) => {
                let outcome =
                    command::run(&db, cli.encoding, op, &mut std::io::stdin().lock()).await;
                outcome.map(Some)
            }
            Command::Shell { json } => shell::run(&db, cli.encoding, *json).await.map(|()| None),
        };
        db.close().await?;
        outcome
    };
    match result.await {
        Ok(Some(Outcome::Value(None))) => ExitCode::from(1),
        Ok(Some(outcome)) => {
            let mut out = std::io::stdout().lock();
            for line in command::text(&outcome, cli.encoding) {
                // A reader that went away (`| head`) is no error of ours.
                if writeln!(out, "{line}").is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(failure) => {
            let failure: Failure = failure;
            eprintln!("party: {} ({})", failure.message, failure.kind);
            ExitCode::from(failure.exit_code())
        }
    }
}

/// `party bench [--backend B] [--json] [--quick]`.
/// For the commands parsed by hand (bench, chaos): `--help` prints `usage` (true: done),
/// and an option not in `known` is an error.
pub(crate) fn check_options(args: &[String], known: &[&str], usage: &str) -> Result<bool, String> {
    for arg in args.iter().skip(1).filter(|a| a.starts_with('-')) {
        if arg == "--help" || arg == "-h" {
            println!("usage: {usage}");
            return Ok(true);
        }
        if !known.contains(&arg.as_str()) {
            return Err(format!("unknown option {arg}; usage: {usage}"));
        }
    }
    Ok(false)
}

async fn bench_main(args: &[String]) -> Result<ExitCode, String> {
    let usage = "party bench [--backend B] [--json] [--quick]";
    if check_options(args, &["--backend", "--json", "--quick"], usage)? {
        return Ok(ExitCode::SUCCESS);
    }
    let backend = match args.iter().position(|a| a == "--backend") {
        Some(i) => parse_backend(args.get(i + 1).ok_or("--backend needs a name")?)?,
        None => Options::default().backend,
    };
    let json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    bench::run(backend, json, quick).await
}

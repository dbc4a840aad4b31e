//! `party`: use a party data directory from the shell.
//!
//! `party [OPTIONS] DIR COMMAND` runs one command on the store in DIR (get, put, del, cas,
//! incr, batch, clear, scan, sublevels, drop-sublevel, watch, dump, load, status, shell);
//! `party demo`, `party bench` and `party chaos` run the tools. Exit codes: 0 ok, 1 key
//! not found (get) or not swapped (cas), 2 usage, 3 any other error (one line on stderr),
//! 128 + N after signal N.

mod bench;
mod chaos;
mod children;
mod command;
mod demo;
mod encoding;
mod failure;
mod out;
mod shell;
mod tool_store;
mod watch;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use party_core::{open, BackendKind, Db, Options};

use command::{Op, Outcome, ScanArgs};
use encoding::Encoding;
use failure::Failure;

/// Open one key-value store from many processes at once.
#[derive(Debug, Parser)]
#[command(
    name = "party",
    version,
    override_usage = "party [OPTIONS] DIR COMMAND [ARGS]\n       party [OPTIONS] demo|bench|chaos [ARGS]",
    after_help = "DIR commands: get, put, del, cas, incr, batch, clear, scan, sublevels, \
                  drop-sublevel, watch, dump, load, status, shell (`party DIR --help` lists them). A \
                  directory named like a tool is ./demo.",
    disable_help_subcommand = true,
    subcommand_value_name = "TOOL"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Top,
}

/// Options that apply wherever they are given.
#[derive(Debug, Clone, Default, Args)]
struct Global {
    /// The store, if more than one is compiled in: fjall, sled, rocksdb or etcd.
    #[arg(long, global = true, value_parser = parse_backend)]
    backend: Option<BackendKind>,
    /// For `--backend etcd`: the cluster's client URLs, comma-separated.
    #[arg(long, global = true, value_delimiter = ',', value_name = "URL,…")]
    etcd_endpoints: Vec<String>,
    /// For `--backend etcd`: the key prefix of the store [default: party/].
    #[arg(long, global = true, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// How keys and values are written and printed [default: utf8].
    #[arg(long, global = true, value_enum)]
    encoding: Option<Encoding>,
    /// Fail in-flight operations when the leader is lost instead of re-sending them.
    #[arg(long, global = true)]
    no_retry: bool,
    /// DIR commands: fail with `timed_out` (exit 3) after waiting this long for a leader,
    /// or for an answer (a leader that does not answer, or none at all while another
    /// program holds the store's lock). Without it they wait for ever; `watch` waits for
    /// changes regardless, once it has started.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Answer with one JSON object (the schema is in the README).
    #[arg(long, global = true)]
    json: bool,
    /// Work inside the sublevel NAME (a namespace of its own); given again, inside a
    /// sublevel of that one.
    #[arg(long, global = true, value_name = "NAME")]
    sublevel: Vec<String>,
}

/// The options of DIR commands (their ids). No tool takes them (`bench` has a `--json` of
/// its own): given before a tool's name they are refused rather than ignored, and after
/// it they are unknown.
const DIR_OPTIONS: [&str; 5] = ["encoding", "no_retry", "timeout", "sublevel", "json"];

/// The top level when it runs a tool: the options of DIR commands are its own alone, not
/// given to every tool as global options are (so the tools' help leaves them out).
fn tools_command() -> clap::Command {
    DIR_OPTIONS.into_iter().fold(Cli::command(), |top, id| {
        top.mut_arg(id, |arg| arg.global(false))
    })
}

/// An option of DIR commands given before a tool's name, as a usage failure; `--json`
/// only where the tool answers in text.
fn refused_option(matches: &ArgMatches) -> Option<Failure> {
    let tool = matches.subcommand_name()?;
    let given = |id: &&str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let id = DIR_OPTIONS
        .into_iter()
        .filter(|id| !(*id == "json" && tool == "bench"))
        .find(given)?;
    Some(Failure::usage(format!(
        "--{} is not an option of party {tool}",
        id.replace('_', "-")
    )))
}

impl Global {
    fn backend(&self) -> BackendKind {
        self.backend.unwrap_or(Options::default().backend)
    }

    /// The options for a handle on DIR: the store (etcd with its settings), retries.
    fn options(&self) -> Options {
        // A `party` process that leads keeps the change feed, so that `watch` works.
        let options = Options::default()
            .retry(!self.no_retry)
            .request_timeout(self.timeout)
            .change_feed(true);
        match self.backend() {
            BackendKind::Etcd => options.etcd(
                self.etcd_endpoints.clone(),
                self.etcd_prefix.as_deref().unwrap_or("party/"),
            ),
            other => options.backend(other),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Top {
    /// level-party's README scenario, live: writers and a reader, the leader killed.
    Demo(demo::DemoArgs),
    /// Measure party against a raw socket and in-process use, on this machine.
    Bench(bench::BenchArgs),
    /// Real processes under SIGKILL, checked for lost and repeated writes.
    Chaos(chaos::ChaosArgs),
}

/// Run COMMAND on the store in DIR.
#[derive(Debug, Parser)]
#[command(name = "party", override_usage = "party [OPTIONS] DIR COMMAND [ARGS]")]
struct DirCli {
    #[command(flatten)]
    global: Global,
    /// The data directory (created if missing).
    dir: PathBuf,
    #[command(subcommand)]
    command: DirCommand,
}

#[derive(Debug, Subcommand)]
enum DirCommand {
    #[command(flatten)]
    Op(Op),
    /// Print every entry in the form `load` reads back (as `scan` prints them).
    Dump,
    /// Put the entries of a listing read from stdin (as `scan` and `dump` print them),
    /// in batches.
    Load,
    /// Keep one handle open and run commands from stdin, one per line.
    Shell,
    /// Print every change committed to a range (by any process), one per line in commit
    /// order, until interrupted: `SEQ put KEY VALUE`, `SEQ del KEY`, `SEQ clear START END`
    /// (tab-separated), and `lagged MISSED` if it fell behind what the leader keeps.
    Watch(watch::WatchArgs),
}

/// `waiting`, failed `TimedOut` once it has waited `limit` (`None`: for ever).
pub(crate) async fn within<T>(
    limit: Option<Duration>,
    waiting: impl std::future::Future<Output = Result<T, party_core::Error>>,
) -> Result<T, party_core::Error> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, waiting)
            .await
            .map_err(|_| party_core::Error::TimedOut)?,
        None => waiting.await,
    }
}

/// A positive number of seconds (fractions allowed).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|timeout| !timeout.is_zero())
        .ok_or_else(|| format!("{text}: a timeout is a positive number of seconds"))
}

/// A store by its name, whether this binary has it or not.
pub(crate) fn backend_named(name: &str) -> Result<BackendKind, String> {
    name.parse()
        .map_err(|e: party_core::UnknownBackend| e.to_string())
}

/// A store this binary has: one it was built without is a usage error here, rather than
/// an election that fails once a command runs.
pub(crate) fn parse_backend(name: &str) -> Result<BackendKind, String> {
    let kind = backend_named(name)?;
    if !kind.is_compiled() {
        return Err(format!(
            "this party binary is built without the {name} backend (cargo feature `{name}`)"
        ));
    }
    Ok(kind)
}

/// Opens `dir` on `store`, for the demo, the bench and the chaos run.
pub(crate) async fn open_on(
    dir: impl AsRef<std::path::Path>,
    store: &tool_store::ToolStore,
) -> Result<Db, String> {
    let options = store.options(dir.as_ref());
    open(dir, options).await.map_err(|e| e.to_string())
}

/// Opens DIR on the store a worker was told of (see [`tool_store::ToolStore::word`]), for
/// the workers of the demo, the bench and chaos.
pub(crate) async fn open_child(dir: &str, store: &str) -> Result<Db, String> {
    open_on(dir, &tool_store::ToolStore::from_word(store)?).await
}

/// The party binary allocates through jemalloc: under glibc's malloc a fifth of a leader's
/// time went to the allocator, and `party bench` gives 8-40 % more pipelined operations and
/// scans with jemalloc, at the same latency one at a time and 1-2 MB more resident per
/// process (docs/benchmarks.md). mimalloc doubled an idle follower's memory. A program
/// that embeds party-core chooses its own allocator. Only where it was measured against
/// the system's (glibc); jemalloc fixes its page size when built, so a binary for kernels
/// with larger pages is built with `JEMALLOC_SYS_WITH_LG_PAGE` set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc gives freed memory back to the system only as it allocates more, so a leader
/// that went quiet after a burst of writes kept it all (30 MB after 100 000 puts, for
/// ever), and a SIGKILL costs in proportion to it: the kernel lets a process's memory go
/// before its sockets, and its followers learn of its death only then (5.6 ms at 30 MB
/// here, 1.8 ms once down to 13 MB). A thread of jemalloc's own gives it back once unused
/// for its decay time (10 s): one, not one per arena up to four.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_memory_goes_back_when_quiet() {
    // Refused (a jemalloc built without them, no thread to be had): memory goes back as
    // before, which costs only that.
    let _ = tikv_jemalloc_ctl::max_background_threads::write(1);
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
}

fn main() -> ExitCode {
    log_as_rust_log_says();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    free_memory_goes_back_when_quiet();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            out::note(format_args!("party: cannot start: {error}"));
            return ExitCode::from(3);
        }
    };
    match std::env::var_os(children::WORKER) {
        Some(name) => runtime.block_on(worker(name)),
        None => runtime.block_on(command_line()),
    }
}

/// Logs to stderr what `RUST_LOG` asks for (e.g. `RUST_LOG=info` for elections and
/// failovers, `debug` for more); warnings and errors without it.
fn log_as_rust_log_says() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// This process is a worker of the demo, the bench or chaos.
async fn worker(name: OsString) -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(OsString::into_string)
        .collect();
    let Ok(args) = args else {
        out::note("party worker: the arguments are not UTF-8");
        return ExitCode::from(2);
    };
    let result = match name.to_str().unwrap_or_default() {
        demo::WRITER => demo::writer(&args).await,
        demo::READER => demo::reader(&args).await,
        bench::ECHO => bench::echo(&args),
        bench::FLOOR => bench::floor(&args).await,
        bench::NODE => bench::node(&args).await,
        chaos::WORKER => chaos::worker(&args).await,
        other => Err(Failure::usage(format!("no worker is named {other:?}"))),
    };
    finish(&format!("party {}", name.display()), result)
}

async fn command_line() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if !names_a_tool(&args) {
        return match DirCli::try_parse_from(&args) {
            Ok(dir) => store_command(dir.global, dir.dir, dir.command).await,
            Err(error) => usage_error(&error),
        };
    }
    let parsed = tools_command()
        .try_get_matches_from(&args)
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, refused_option(&matches))));
    let (cli, refused) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return usage_error(&error),
    };
    let global = cli.global;
    let tool = match &cli.command {
        Top::Demo(_) => "party demo",
        Top::Bench(_) => "party bench",
        Top::Chaos(_) => "party chaos",
    };
    if let Some(failure) = refused {
        let refusal = Err(failure);
        if global.json {
            // A script that asked for JSON reads its answer on stdout.
            let _ = out::line(command::json(&refusal, Encoding::Utf8));
        }
        return finish(tool, refusal.map(|_: Outcome| ExitCode::SUCCESS));
    }
    let started = tool_store::ToolStore::start(
        global.backend(),
        &global.etcd_endpoints,
        global.etcd_prefix.as_deref(),
    );
    let (store, _cluster) = match started {
        Ok(started) => started,
        Err(failure) => return finish(tool, Err(failure)),
    };
    let result = match cli.command {
        Top::Demo(args) => demo::orchestrate(&store, args).await,
        Top::Bench(args) => bench::run(&store, global.json || args.json, args).await,
        Top::Chaos(args) => chaos::run(&store, args).await,
    };
    finish(tool, result)
}

/// Whether the first word after the options names a tool, or there is none (then the top
/// level answers: its help, its version, or how to use it); otherwise it is a DIR. A word
/// that is not UTF-8 is a DIR.
fn names_a_tool(args: &[OsString]) -> bool {
    match first_word(args) {
        Some(word) => word.to_str().is_some_and(|text| {
            text.starts_with('-') || Cli::command().find_subcommand(text).is_some()
        }),
        None => true,
    }
}

/// The first word after the top level's options and their values: a DIR, a tool's name,
/// or an option the top level does not know.
fn first_word(args: &[OsString]) -> Option<&OsString> {
    let top = Cli::command();
    // For an option of the top level: whether the next word is its value.
    let option = |text: &str| {
        let name = text.strip_prefix("--")?.split('=').next()?;
        let arg = top
            .get_arguments()
            .find(|arg| arg.get_long() == Some(name))?;
        Some(arg.get_action().takes_values() && !text.contains('='))
    };
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        match word.to_str().map(option) {
            Some(Some(true)) => {
                words.next();
            }
            Some(Some(false)) => {}
            _ => return Some(word),
        }
    }
    None
}

/// Prints clap's message (help, version or a usage error) and gives its exit code; when
/// a tool's name was meant as a directory, says how to write that.
fn usage_error(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.exit_code() != 0 {
        let args: Vec<OsString> = std::env::args_os().collect();
        // Asked for JSON, a script reads stdout for its answer, failures included.
        let words = args.iter().skip(1).take_while(|word| *word != "--");
        if words.into_iter().any(|word| word == "--json") {
            let message = shell::usage_message(&error.to_string());
            let failure = Failure::usage(message);
            let _ = out::line(command::json(&Err(failure), Encoding::Utf8));
        }
        let tool = first_word(&args)
            .filter(|word| names_a_tool(&args) && !word.as_encoded_bytes().starts_with(b"-"))
            .filter(|word| std::path::Path::new(word).exists())
            .cloned();
        if let Some(tool) = tool {
            out::note(format_args!(
                "note: `{0}` is the {0} tool; for the directory named {0}, write ./{0}",
                tool.display()
            ));
        }
    }
    ExitCode::from(error.exit_code().clamp(0, 255) as u8)
}

/// The exit code of a tool or worker, its failure reported on stderr.
fn finish(who: &str, result: Result<ExitCode, Failure>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(failure) => {
            if !failure.is_stdout_closed() {
                out::note(format_args!("{who}: {}", failure.message));
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn store_command(global: Global, dir: PathBuf, command: DirCommand) -> ExitCode {
    let encoding = global.encoding.unwrap_or(Encoding::Utf8);
    if global.backend() == BackendKind::Etcd && global.etcd_endpoints.is_empty() {
        let failure = Failure::usage("--backend etcd needs --etcd-endpoints URL,…");
        return report(Err(failure), encoding, global.json);
    }
    let db = match open(&dir, global.options()).await {
        Ok(db) => db,
        Err(error) => return report(Err(error.into()), encoding, global.json),
    };
    let outcome = async {
        within(global.timeout, db.ready()).await?;
        let space = global
            .sublevel
            .iter()
            .try_fold(db.clone(), |space, name| space.sublevel(name))?;
        run_store_command(&space, &command, encoding, global.json, global.timeout).await
    };
    let terminal = TerminalMode::save();
    let outcome = tokio::select! {
        outcome = outcome => outcome,
        signal = interrupted() => {
            // The shell's line editor may have the terminal in raw mode right now.
            terminal.restore();
            Err(signal)
        }
    };
    // This process exits next, which releases the store at once.
    let _ = db.close_before_exit().await;
    report(outcome, encoding, global.json)
}

/// The terminal's settings on stdin as the command found them, if stdin is a terminal.
struct TerminalMode(Option<rustix::termios::Termios>);

impl TerminalMode {
    fn save() -> TerminalMode {
        TerminalMode(rustix::termios::tcgetattr(std::io::stdin()).ok())
    }

    fn restore(&self) {
        if let Some(mode) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                mode,
            );
        }
    }
}

/// A failure for the first SIGINT, SIGTERM or SIGHUP; never, if they cannot be watched.
async fn interrupted() -> Failure {
    use tokio::signal::unix::{signal, SignalKind};
    let watch = |kind| async move {
        match signal(kind) {
            Ok(mut stream) => stream.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    let name = tokio::select! {
        _ = watch(SignalKind::interrupt()) => "SIGINT",
        _ = watch(SignalKind::terminate()) => "SIGTERM",
        _ = watch(SignalKind::hangup()) => "SIGHUP",
    };
    Failure::interrupted(name)
}

/// Runs a command; what is left to print is in the outcome (`None`: printed already).
async fn run_store_command(
    db: &Db,
    command: &DirCommand,
    encoding: Encoding,
    json: bool,
    timeout: Option<Duration>,
) -> Result<Option<Outcome>, Failure> {
    let stdin = || std::io::stdin().lock();
    match command {
        DirCommand::Op(Op::Scan(scan)) if !json => command::stream_scan(db, encoding, scan)
            .await
            .map(|()| None),
        DirCommand::Dump if !json => command::stream_scan(db, encoding, &ScanArgs::default())
            .await
            .map(|()| None),
        DirCommand::Dump => {
            command::run(db, encoding, &Op::Scan(ScanArgs::default()), &mut stdin())
                .await
                .map(Some)
        }
        DirCommand::Op(op) => command::run(db, encoding, op, &mut stdin()).await.map(Some),
        DirCommand::Load => command::load(db, encoding, &mut stdin())
            .await
            .map(|n| Some(Outcome::Loaded(n))),
        DirCommand::Shell => shell::run(db, encoding, json).await.map(|()| None),
        DirCommand::Watch(args) => watch::run(db, encoding, json, args, timeout)
            .await
            .map(|()| None),
    }
}

/// Prints an outcome (or its failure) and gives the exit code.
fn report(outcome: Result<Option<Outcome>, Failure>, encoding: Encoding, json: bool) -> ExitCode {
    let code = match &outcome {
        Ok(Some(Outcome::Value(None) | Outcome::Conflict(_))) => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(failure) => ExitCode::from(failure.exit_code()),
    };
    let printed = match outcome {
        Ok(None) => Ok(()),
        Err(failure) if failure.is_stdout_closed() => Ok(()),
        outcome if json => {
            let outcome = outcome.map(|o| o.unwrap_or(Outcome::Done));
            out::line(command::json(&outcome, encoding))
        }
        Ok(Some(outcome)) => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&command::text(&outcome, encoding))
                .and_then(|()| stdout.flush())
                .map_err(out::written)
        }
        Err(failure) => {
            out::note(format_args!(
                "party: {} ({})",
                failure.message, failure.kind
            ));
            Ok(())
        }
    };
    match printed {
        Err(failure) if !failure.is_stdout_closed() => {
            out::note(format_args!(
                "party: {} ({})",
                failure.message, failure.kind
            ));
            ExitCode::from(3)
        }
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--backend` takes the stores this binary has, and names the one it lacks.
    #[test]
    fn a_backend_is_taken_only_if_compiled_in() {
        for kind in [
            BackendKind::Fjall,
            BackendKind::Sled,
            BackendKind::Rocksdb,
            BackendKind::Etcd,
        ] {
            match parse_backend(kind.name()) {
                Ok(parsed) => {
                    assert!(kind.is_compiled(), "{kind:?} taken, not compiled in");
                    assert_eq!(parsed, kind);
                }
                Err(error) => {
                    assert!(!kind.is_compiled(), "{kind:?} refused: {error}");
                    assert!(error.contains(kind.name()), "{error}");
                }
            }
        }
        assert!(parse_backend("leveldb").is_err());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_binarys_allocator_gives_memory_back_from_a_thread_of_its_own() {
        free_memory_goes_back_when_quiet();
        assert_eq!(tikv_jemalloc_ctl::background_thread::read(), Ok(true));
        assert_eq!(tikv_jemalloc_ctl::max_background_threads::read(), Ok(1));
    }
}

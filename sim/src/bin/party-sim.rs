//! `party-sim`: run the simulator on one seed (with its trace), sweep a range of seeds, or
//! replay the recordings of a real run.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser;
use party_sim::replay::replay;
use party_sim::schedule::parse_numbers;
use party_sim::shrink::shrink;
use party_sim::{run, run_schedule, Injection, Schedule};

/// Deterministic failover simulator for party.
#[derive(Debug, Parser)]
#[command(name = "party-sim")]
struct Args {
    /// Run one seed and print its trace and trace hash.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Replay the recordings of a real run (the `*.rec` files of DIR, as `PARTY_RECORD=DIR`
    /// or `party chaos --record DIR` leave them): drive each process's machine with its
    /// recorded inputs, compare its outputs, and check the run's history.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["seed", "seeds", "inject"])]
    replay: Option<std::path::PathBuf>,
    /// Sweep seeds A..B (B excluded) and report the failing ones.
    #[arg(long, value_parser = parse_range)]
    seeds: Option<(u64, u64)>,
    /// Re-create a known bug class (see the README for their names).
    #[arg(long, value_parser = parse_injection)]
    inject: Option<(String, Injection)>,
    /// Print only the summary of a single seed, not its trace.
    #[arg(long)]
    quiet: bool,
    /// Shrink the seed's failing run: print the smallest schedule of it found that still
    /// shows the same violation, and the command that replays it.
    #[arg(long, requires = "seed")]
    shrink: bool,
    /// Run the seed with at most this many processes.
    #[arg(long, requires = "seed", conflicts_with = "shrink")]
    processes: Option<usize>,
    /// Carry out only these of the seed's faults, by number (`0,3-5`, or `none`).
    #[arg(long, requires = "seed", conflicts_with = "shrink", value_parser = parse_numbers)]
    faults: Option<BTreeSet<u32>>,
    /// Carry out only these of the seed's workload steps, by number.
    #[arg(long, requires = "seed", conflicts_with = "shrink", value_parser = parse_numbers)]
    ops: Option<BTreeSet<u32>>,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once("..").ok_or("expected A..B")?;
    let a = a.parse().map_err(|e| format!("{a}: {e}"))?;
    let b = b.parse().map_err(|e| format!("{b}: {e}"))?;
    if a >= b {
        return Err(format!("empty range {a}..{b}"));
    }
    Ok((a, b))
}

fn parse_injection(name: &str) -> Result<(String, Injection), String> {
    let injection = Injection::named(name)
        .ok_or_else(|| format!("unknown bug class {name:?}; one of {:?}", Injection::NAMES))?;
    Ok((name.to_owned(), injection))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut out = std::io::stdout().lock();
    match report(&args, &mut out) {
        Ok(all_passed) if all_passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        // The reader went away (`| head`): nothing more to say.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("party-sim: cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs what `args` ask for and prints it; whether every seed passed.
fn report(args: &Args, out: &mut impl Write) -> std::io::Result<bool> {
    let injection = args.inject.as_ref().map(|(_, i)| *i).unwrap_or_default();
    let inject_flag = match &args.inject {
        Some((name, _)) => format!(" --inject {name}"),
        None => String::new(),
    };
    if let Some(dir) = &args.replay {
        return report_replay(dir, args.quiet, out);
    }
    if let (Some(seed), true) = (args.seed, args.shrink) {
        return report_shrink(seed, injection, &inject_flag, args.quiet, out);
    }
    if let Some(seed) = args.seed {
        let schedule = Schedule {
            seed,
            processes: args.processes,
            faults: args.faults.clone(),
            ops: args.ops.clone(),
        };
        let result = run_schedule(schedule, injection);
        if !args.quiet {
            for line in result.trace.lines() {
                writeln!(out, "{line}")?;
            }
        }
        writeln!(
            out,
            "seed {seed}: {} operations, {} crashes, trace hash {:016x}",
            result.ops,
            result.kills,
            result.trace.hash()
        )?;
        for violation in &result.violations {
            writeln!(out, "VIOLATION: {violation}")?;
        }
        return Ok(result.violations.is_empty());
    }
    let (from, to) = args.seeds.unwrap_or((0, 1000));
    let started = Instant::now();
    let mut failing = Vec::new();
    let running: Running = Mutex::new((from, started));
    let (sweep_done, sweep_ended) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let (running, inject_flag) = (&running, &inject_flag);
        scope.spawn(move || tell_progress(from, running, &sweep_ended, inject_flag));
        for seed in from..to {
            *running.lock().unwrap_or_else(PoisonError::into_inner) = (seed, Instant::now());
            let result = run(seed, injection);
            if let Some(first) = result.violations.first() {
                writeln!(out, "seed {seed} FAILED: {first}")?;
                writeln!(out, "  replay: party-sim --seed {seed}{inject_flag}")?;
                out.flush()?;
                failing.push(seed);
            }
        }
        drop(sweep_done);
        std::io::Result::Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let count = to - from;
    writeln!(
        out,
        "{count} seeds, {} failed, {:.0} seeds/s ({seconds:.1} s)",
        failing.len(),
        count as f64 / seconds
    )?;
    Ok(failing.is_empty())
}

/// The seed a sweep runs, and since when.
type Running = Mutex<(u64, Instant)>;

/// How often a sweep tells how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Tells on stderr, every [`PROGRESS_EVERY`] until `ended` (its sender dropped), how far a
/// sweep from `from` got: see [`progress_line`].
fn tell_progress(from: u64, running: &Running, ended: &mpsc::Receiver<()>, inject_flag: &str) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = ended.recv_timeout(PROGRESS_EVERY) {
        let (seed, since) = *running.lock().unwrap_or_else(PoisonError::into_inner);
        let line = progress_line(from, seed, since.elapsed(), inject_flag);
        // A closed stderr ends the telling, not the sweep (`eprintln!` would panic).
        if writeln!(std::io::stderr(), "{line}").is_err() {
            return;
        }
    }
}

/// How many seeds a sweep from `from` has done, and which one runs; one that has run for
/// [`PROGRESS_EVERY`] or more is named with the command that runs it alone, so a seed that
/// hangs (as one did, for 25 minutes, in the linearizability search) shows while it runs.
fn progress_line(from: u64, seed: u64, ran_for: Duration, inject_flag: &str) -> String {
    let mut line = format!(
        "party-sim: {} seeds swept, seed {seed} running",
        seed - from
    );
    if ran_for >= PROGRESS_EVERY {
        line += &format!(
            " for {} s (alone: party-sim --seed {seed}{inject_flag})",
            ran_for.as_secs()
        );
    }
    line
}

/// `--shrink`: the smallest schedule of the seed that fails alike, and its replay.
fn report_shrink(
    seed: u64,
    injection: Injection,
    inject_flag: &str,
    quiet: bool,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let Some(shrunk) = shrink(seed, injection) else {
        writeln!(out, "seed {seed} passes: nothing to shrink")?;
        return Ok(true);
    };
    let smallest = run_schedule(shrunk.schedule.clone(), injection);
    if !quiet {
        for line in smallest.trace.lines() {
            writeln!(out, "{line}")?;
        }
    }
    let ((faults, steps), (kept_faults, kept_steps)) = (shrunk.before, shrunk.after);
    writeln!(
        out,
        "seed {seed} shrunk in {} runs: {faults} faults -> {kept_faults}, {steps} workload steps -> {kept_steps}",
        shrunk.runs
    )?;
    writeln!(out, "VIOLATION: {}", shrunk.violation)?;
    writeln!(
        out,
        "replay: party-sim {}{inject_flag}",
        shrunk.schedule.arguments()
    )?;
    Ok(false)
}

/// The most violations of a replay printed: a real run can have thousands of one kind.
const MOST_SHOWN: usize = 20;

/// `--replay DIR`: the recordings of DIR replayed and checked.
fn report_replay(
    dir: &std::path::Path,
    quiet: bool,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let files = match recordings(dir) {
        Ok(files) => files,
        Err(error) => {
            writeln!(
                out,
                "cannot read the recordings in {}: {error}",
                dir.display()
            )?;
            return Ok(false);
        }
    };
    let replayed = match replay(&files) {
        Ok(replayed) => replayed,
        Err(error) => {
            writeln!(out, "cannot replay {}: {error}", dir.display())?;
            return Ok(false);
        }
    };
    if !quiet {
        for line in replayed.trace.lines() {
            writeln!(out, "{line}")?;
        }
    }
    writeln!(
        out,
        "replay of {}: {} processes, {} steps, {} operations, {} commits",
        dir.display(),
        replayed.processes,
        replayed.steps,
        replayed.ops,
        replayed.commits
    )?;
    if replayed.nondeterminism.is_empty() {
        writeln!(out, "every output matched the recording")?;
    }
    for difference in &replayed.nondeterminism {
        writeln!(out, "NONDETERMINISM: {difference}")?;
    }
    for violation in replayed.violations.iter().take(MOST_SHOWN) {
        writeln!(out, "VIOLATION: {violation}")?;
    }
    if let Some(more) = replayed.violations.len().checked_sub(MOST_SHOWN + 1) {
        writeln!(out, "... and {} more violations", more + 1)?;
    }
    for unchecked in &replayed.unchecked {
        writeln!(out, "UNCHECKED: {unchecked}")?;
    }
    Ok(replayed.passed())
}

/// The names and bytes of the segment files (`*.rec`) in `dir`.
fn recordings(dir: &std::path::Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "rec") {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.push((name, std::fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_running_past_the_progress_interval_is_named_with_its_replay() {
        let quick = progress_line(100, 150, Duration::from_secs(3), "");
        assert_eq!(quick, "party-sim: 50 seeds swept, seed 150 running");
        let stuck = progress_line(100, 150, PROGRESS_EVERY * 3, " --inject no-dedup");
        assert_eq!(
            stuck,
            "party-sim: 50 seeds swept, seed 150 running for 180 s \
             (alone: party-sim --seed 150 --inject no-dedup)"
        );
    }
}

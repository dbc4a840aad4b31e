//! `party-sim`: run the simulator on one seed (with its trace) or sweep a range of seeds.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use party_sim::{run, Injection};

/// Deterministic failover simulator for party.
#[derive(Debug, Parser)]
#[command(name = "party-sim")]
struct Args {
    /// Run one seed and print its trace and trace hash.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep seeds A..B (B excluded) and report the failing ones.
    #[arg(long, value_parser = parse_range)]
    seeds: Option<(u64, u64)>,
    /// Re-create a known bug class (see the README for their names).
    #[arg(long, value_parser = parse_injection)]
    inject: Option<(String, Injection)>,
    /// Print only the summary of a single seed, not its trace.
    #[arg(long)]
    quiet: bool,
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
    if let Some(seed) = args.seed {
        let result = run(seed, injection);
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
    for seed in from..to {
        let result = run(seed, injection);
        if let Some(first) = result.violations.first() {
            writeln!(out, "seed {seed} FAILED: {first}")?;
            writeln!(out, "  replay: party-sim --seed {seed}{inject_flag}")?;
            out.flush()?;
            failing.push(seed);
        }
    }
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

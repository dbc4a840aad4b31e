//! `party-sim`: run the simulator on one seed (with its trace) or sweep a range of seeds.

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
    /// Re-create a known bug class: no-dedup, inclusive-resume or ignore-lock-loss.
    #[arg(long, value_parser = parse_injection)]
    inject: Option<Injection>,
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

fn parse_injection(name: &str) -> Result<Injection, String> {
    Injection::named(name)
        .ok_or_else(|| format!("unknown bug class {name:?}; one of {:?}", Injection::NAMES))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let injection = args.inject.unwrap_or_default();
    let inject_flag = match args.inject {
        Some(_) => format!(
            " --inject {}",
            std::env::args()
                .skip_while(|a| a != "--inject")
                .nth(1)
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    if let Some(seed) = args.seed {
        let result = run(seed, injection);
        if !args.quiet {
            for line in result.trace.lines() {
                println!("{line}");
            }
        }
        println!(
            "seed {seed}: {} operations, {} crashes, trace hash {:016x}",
            result.ops,
            result.kills,
            result.trace.hash()
        );
        for violation in &result.violations {
            println!("VIOLATION: {violation}");
        }
        return if result.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let (from, to) = args.seeds.unwrap_or((0, 1000));
    let started = Instant::now();
    let mut failing = Vec::new();
    for seed in from..to {
        let result = run(seed, injection);
        if let Some(first) = result.violations.first() {
            println!("seed {seed} FAILED: {first}");
            println!("  replay: party-sim --seed {seed}{inject_flag}");
            failing.push(seed);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let count = to - from;
    println!(
        "{count} seeds, {} failed, {:.0} seeds/s ({seconds:.1} s)",
        failing.len(),
        count as f64 / seconds
    );
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

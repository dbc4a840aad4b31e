//! Cut-down runs and shrinking: a schedule that leaves nothing out is the seed's own run, a
//! cut-down run is as deterministic as a seed, and a failing seed of hundreds of events
//! shrinks to a handful that still fail alike, replayable by the command printed.

use std::collections::BTreeSet;
use std::process::Command;

use party_sim::shrink::{blank_numbers, shrink};
use party_sim::{run, run_schedule, Injection, Schedule};

#[test]
fn a_schedule_that_leaves_nothing_out_is_the_seeds_own_run() {
    for seed in [3, 1619] {
        let own = run(seed, Injection::default());
        let everything = Schedule {
            processes: Some(party_sim::world::MOST_PROCESSES),
            faults: Some((0..own.fault_turns).collect()),
            ops: Some((0..own.op_turns).collect()),
            ..Schedule::of(seed)
        };
        let same = run_schedule(everything, Injection::default());
        assert_eq!(own.trace.lines(), same.trace.lines(), "seed {seed}");
    }
}

#[test]
fn a_cut_down_run_replays_alike_and_does_less() {
    let seed = 1619;
    let own = run(seed, Injection::default());
    let one_fault = Schedule {
        processes: Some(3),
        faults: Some(BTreeSet::from([0])),
        ..Schedule::of(seed)
    };
    let every_third_step = Schedule {
        ops: Some((0..own.op_turns).step_by(3).collect()),
        ..one_fault.clone()
    };
    let first = run_schedule(every_third_step.clone(), Injection::default());
    let second = run_schedule(every_third_step, Injection::default());
    assert_eq!(first.trace.hash(), second.trace.hash());
    assert!(first.violations.is_empty(), "{:?}", first.violations);
    assert!(first.kills <= 2, "one fault turn killed {}", first.kills);
    let all_steps = run_schedule(one_fault, Injection::default());
    assert!(
        first.ops * 2 < all_steps.ops,
        "a third of the steps made {} operations, all of them {}",
        first.ops,
        all_steps.ops
    );
}

#[test]
fn a_passing_seed_has_nothing_to_shrink() {
    assert!(shrink(1619, Injection::default()).is_none());
}

/// A seed that fails under an injected bug, from hundreds of trace events to a handful,
/// each time still showing the violation the seed showed.
#[test]
fn a_failing_seed_of_hundreds_of_events_shrinks_to_a_handful() {
    for name in ["ignore-lock-loss", "partial-apply", "records-apart"] {
        let injection = Injection::named(name).unwrap();
        let seed = (0..1000)
            .find(|seed| !run(*seed, injection).violations.is_empty())
            .unwrap();
        let own = run(seed, injection);
        let shrunk = shrink(seed, injection).unwrap();
        let smallest = run_schedule(shrunk.schedule.clone(), injection);
        let seeds_own = blank_numbers(&own.violations[0]);
        assert!(
            smallest
                .violations
                .iter()
                .any(|violation| blank_numbers(violation) == seeds_own),
            "{name}: {:?} does not show the seed's {}",
            smallest.violations,
            own.violations[0]
        );
        let (faults, steps) = shrunk.after;
        assert!(
            faults + steps <= 10,
            "{name}: seed {seed} kept {faults} faults and {steps} steps"
        );
        assert!(
            own.trace.lines().len() >= 200
                && smallest.trace.lines().len() * 5 <= own.trace.lines().len(),
            "{name}: {} trace events shrank only to {}",
            own.trace.lines().len(),
            smallest.trace.lines().len()
        );
    }
}

/// `party-sim --seed N --inject X --shrink` prints a replay command that, run as printed,
/// fails with the same violation.
#[test]
fn the_printed_replay_shows_the_same_violation() {
    let sim = env!("CARGO_BIN_EXE_party-sim");
    // The first seed the bug fails, not a number that other draws would move.
    let injection = Injection::named("ignore-lock-loss").unwrap();
    let seed = (0..1000)
        .find(|seed| !run(*seed, injection).violations.is_empty())
        .unwrap()
        .to_string();
    let output = Command::new(sim)
        .args(["--seed", &seed, "--inject", "ignore-lock-loss", "--shrink"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a shrunk failure still fails");
    let printed = String::from_utf8_lossy(&output.stdout);
    let violation = printed
        .lines()
        .find(|line| line.starts_with("VIOLATION: "))
        .expect("the violation is printed");
    let replay = printed
        .lines()
        .find_map(|line| line.strip_prefix("replay: party-sim "))
        .expect("the replay command is printed");
    let replayed = Command::new(sim)
        .args(replay.split_whitespace())
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(!replayed.status.success());
    let replayed = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        replayed.lines().any(|line| line == violation),
        "{replay} printed\n{replayed}\nnot {violation}"
    );
}

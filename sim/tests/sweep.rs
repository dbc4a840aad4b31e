//! The simulator in the test suite: determinism, a fixed sweep with no failure, seeds past
//! it that once misled the checks, and proof that each injected bug class is caught.

use party_sim::{run, Injection};

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [0, 7, 1619, 123_456_789] {
        let first = run(seed, Injection::default());
        let second = run(seed, Injection::default());
        assert_eq!(first.trace.hash(), second.trace.hash(), "seed {seed}");
        assert_eq!(first.trace.lines(), second.trace.lines(), "seed {seed}");
        assert!(
            first.ops > 50,
            "seed {seed} did little: {} operations",
            first.ops
        );
    }
    assert_ne!(
        run(1, Injection::default()).trace.hash(),
        run(2, Injection::default()).trace.hash(),
        "different seeds, different runs"
    );
}

#[test]
fn twenty_thousand_seeds_without_a_violation() {
    let mut crashes = 0;
    for seed in 0..20_000 {
        let result = run(seed, Injection::default());
        assert!(
            result.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p party-sim -- --seed {seed}",
            result.violations
        );
        crashes += result.kills;
    }
    assert!(
        crashes > 10_000,
        "the sweep crashed only {crashes} processes"
    );
}

/// Seeds past the fixed sweep where the checks once went wrong, each kept passing: the
/// false alarm or hang it showed stays mended.
#[test]
fn seeds_that_once_misled_the_checks_pass() {
    let seeds = [
        (
            595_507,
            "a process let go of a leader that had closed, though its seat's welcome came \
             too late for its election and never served it",
        ),
        (
            409_787,
            "thirty writes in flight across a failover, which the linearizability search \
             took hours over",
        ),
        (
            238_845,
            "a leadership overwritten while its last one still drained",
        ),
    ];
    for (seed, once) in seeds {
        let result = run(seed, Injection::default());
        assert!(
            result.violations.is_empty(),
            "seed {seed} (once: {once}): {:?}",
            result.violations
        );
    }
}

#[test]
fn every_injected_bug_class_is_caught() {
    for name in Injection::NAMES {
        let injection = Injection::named(name).unwrap();
        // The rarest classes show in about one seed of 500: 1000 seeds missed one of them
        // about once in eight sweeps.
        let caught = (0..3000).find(|seed| !run(*seed, injection).violations.is_empty());
        assert!(caught.is_some(), "{name} went unnoticed over 3000 seeds");
    }
}

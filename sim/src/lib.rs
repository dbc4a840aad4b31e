//! The party simulator: virtual processes driving the real `party-proto` machines over
//! virtual locks, pipes and an in-memory store, all from one seed.
//!
//! Nothing here reads the clock, the OS random source or the filesystem, so a seed always
//! replays the same run — the same trace, the same hash. Every run checks that no write is
//! applied twice, that every key's history is linearizable, that iterators deliver every
//! key present throughout exactly once and in order, that at most one process leads at a
//! time, and that everything pending finishes once the faults stop.

pub mod check;
pub mod history;
pub mod lock_oracle;
pub mod trace;
pub mod world;

use party_proto::bugs::Bugs;

pub use world::RunResult;

/// Known bug classes to re-create, proving the checks catch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injection {
    /// The leader applies re-sent writes again (no dedup).
    pub no_dedup: bool,
    /// Bugs inside the proto machines.
    pub bugs: Bugs,
}

impl Injection {
    /// The bug classes by name, as `party-sim --inject NAME` takes them.
    pub const NAMES: [&'static str; 3] = ["no-dedup", "inclusive-resume", "ignore-lock-loss"];

    pub fn named(name: &str) -> Option<Injection> {
        let mut injection = Injection::default();
        match name {
            "no-dedup" => injection.no_dedup = true,
            "inclusive-resume" => injection.bugs.inclusive_resume = true,
            "ignore-lock-loss" => injection.bugs.ignore_lock_loss = true,
            _ => return None,
        }
        Some(injection)
    }
}

/// Simulates one seed.
pub fn run(seed: u64, injection: Injection) -> RunResult {
    world::World::new(seed, injection).run()
}

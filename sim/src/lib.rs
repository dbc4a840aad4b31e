//! The party simulator: virtual processes driving the real `party-proto` machines over
//! virtual locks, pipes and an in-memory store, all from one seed.
//!
//! Nothing here reads the clock, the OS random source or the filesystem, so a seed always
//! replays the same run — the same trace, the same hash. Every run checks that no write is
//! applied twice, that every key's history is linearizable, that every committed transaction
//! read what the store held at its place in the commit order, that iterators deliver every
//! key present throughout exactly once and in order, that at most one process leads at a
//! time, and that everything pending finishes once the faults stop.

pub mod check;
pub mod history;
pub mod lock_oracle;
pub mod replay;
pub mod schedule;
pub mod shrink;
pub mod trace;
pub mod world;

use party_proto::bugs::Bugs;

pub use schedule::Schedule;
pub use world::RunResult;

/// Known bug classes to re-create, proving the checks catch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injection {
    /// Bugs inside the proto machines.
    pub bugs: Bugs,
}

impl Injection {
    /// The bug classes by name, as `party-sim --inject NAME` takes them.
    pub const NAMES: [&'static str; 17] = Bugs::NAMES;

    pub fn named(name: &str) -> Option<Injection> {
        Bugs::named(name).map(|bugs| Injection { bugs })
    }
}

/// Simulates one seed.
pub fn run(seed: u64, injection: Injection) -> RunResult {
    run_schedule(Schedule::of(seed), injection)
}

/// Simulates one seed's run, cut down as `schedule` says.
pub fn run_schedule(schedule: Schedule, injection: Injection) -> RunResult {
    world::World::new(schedule, injection).run()
}

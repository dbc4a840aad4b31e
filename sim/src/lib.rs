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
    /// A store over the network lets a dead leader's commit land after the next leader
    /// opened it (etcd without the directory's commit marker moved at takeover).
    pub unfenced_late_commits: bool,
}

/// The name of [`Injection::unfenced_late_commits`].
const UNFENCED_LATE_COMMITS: &str = "unfenced-late-commits";

impl Injection {
    /// The bug classes by name, as `party-sim --inject NAME` takes them: the proto
    /// machines' and the store's.
    pub const NAMES: [&'static str; Bugs::NAMES.len() + 1] = {
        let mut names = [UNFENCED_LATE_COMMITS; Bugs::NAMES.len() + 1];
        let mut at = 0;
        while at < Bugs::NAMES.len() {
            names[at] = Bugs::NAMES[at];
            at += 1;
        }
        names
    };

    pub fn named(name: &str) -> Option<Injection> {
        if name == UNFENCED_LATE_COMMITS {
            return Some(Injection {
                unfenced_late_commits: true,
                ..Injection::default()
            });
        }
        Bugs::named(name).map(|bugs| Injection {
            bugs,
            ..Injection::default()
        })
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

//! What a leader leaves its successor to replay. fjall and RocksDB replay, at every open,
//! what the store was written since its last checkpoint; the writer asks for one once the
//! store has been quiet for its quiet period, counting what the store replayed when its
//! leader took over. The check: a leader killed (or found at the run's end) after a quiet
//! period without a write has checkpointed the store, unless a store fault or a pause
//! came in between (a writer the store failed waits to read the log again; a paused
//! process's timers wait too).

use std::time::Duration;

use party_proto::WriterConfig;

use super::World;
use crate::lock_oracle::ProcessId;

/// What the store holds unsaved, and since when no fault could have kept its writer busy.
#[derive(Debug, Default)]
pub(super) struct Saving {
    /// Written since the last checkpoint (an empty store is saved).
    unsaved: bool,
    /// When the store last failed an operation (or lost a commit's answer).
    last_fault: u64,
}

/// The writer's quiet period in the simulator's microseconds, and a step of slack: the
/// writer's timer fires on the first whole microsecond not before it.
fn quiet_us() -> u64 {
    let quiet: Duration = WriterConfig::default().quiet_period;
    quiet.as_micros() as u64 + 1
}

impl World {
    /// `process`'s writer wrote the store: quiet from now.
    pub(super) fn store_written(&mut self, process: ProcessId) {
        self.saving.unsaved = true;
        if let Some(leading) = &mut self.processes[process].leading {
            leading.quiet_since = self.now;
        }
    }

    pub(super) fn store_checkpointed(&mut self) {
        self.saving.unsaved = false;
    }

    pub(super) fn store_failed(&mut self) {
        self.saving.last_fault = self.now;
    }

    /// If `process` leads and has let the store be quiet for its writer's quiet period,
    /// the store is checkpointed.
    pub(super) fn check_checkpointed(&mut self, process: ProcessId) {
        let node = &self.processes[process];
        // The store thread checkpoints: one that died cannot.
        let Some(leading) = node.leading.as_ref().filter(|l| !l.store_died) else {
            return;
        };
        let quiet_from = leading
            .quiet_since
            .max(self.saving.last_fault)
            .max(node.paused_until.unwrap_or(0));
        if self.saving.unsaved && self.now >= quiet_from + quiet_us() {
            self.violations.push(format!(
                "p{process} led with the store quiet for {}us (since {quiet_from}us) without \
                 a checkpoint: its successor replays what the store holds unsaved",
                self.now - quiet_from
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use party_proto::ElectionOutput;

    use super::*;

    /// A world whose process 0 leads and wrote the store at time 0.
    fn written_at_zero() -> World {
        let mut world = World::quiet();
        world.answer(0, ElectionOutput::Serve);
        world.store_written(0);
        world
    }

    /// What the check says of process 0 at `now`.
    fn checked_at(mut world: World, now: u64) -> Vec<String> {
        world.now = now;
        world.check_checkpointed(0);
        world.violations
    }

    /// The bound is the writer's quiet period: one microsecond short of it a leader has not
    /// yet failed to checkpoint, at it it has (mutation run 72's K18: a check that waited
    /// twice the period passed every test, so a writer that checkpoints late went
    /// unnoticed).
    #[test]
    fn a_store_left_quiet_for_the_quiet_period_unsaved_is_a_violation() {
        for (quiet_for, violations) in [(quiet_us() - 1, 0), (quiet_us(), 1)] {
            let told = checked_at(written_at_zero(), quiet_for);
            assert_eq!(told.len(), violations, "quiet for {quiet_for}us: {told:?}");
        }
    }

    /// A store fault starts the quiet period again: the writer the store failed waits to
    /// read the log again before it counts quiet time (K20 took the excuse away unnoticed).
    #[test]
    fn a_store_fault_starts_the_quiet_period_again() {
        let fault_at = quiet_us() / 2;
        for (now, violations) in [(quiet_us(), 0), (fault_at + quiet_us(), 1)] {
            let mut world = written_at_zero();
            world.now = fault_at;
            world.store_failed();
            let told = checked_at(world, now);
            assert_eq!(told.len(), violations, "at {now}us: {told:?}");
        }
    }
}

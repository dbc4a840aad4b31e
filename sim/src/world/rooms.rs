//! The waiting room, as party-core's Unix sockets behave: the lock holder opens one, those
//! who find nobody listening wait in it, and closing it (or the holder's death) tells each
//! of them, a little later. Checked: a leader never serves with its room still open (those
//! waiting would wait for nothing), and a process told that its room closed never acts as
//! if it still waited in it.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// The rooms of one data directory: one at most is reachable by its name, but a holder
/// whose lock was taken away (a virtual lock) keeps its own open until it gives it back.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    /// Whose room the name leads to, if anyone's.
    reachable: Option<ProcessId>,
    /// The open rooms, by holder, and who waits in each, by incarnation.
    seats: BTreeMap<ProcessId, BTreeSet<(ProcessId, u32)>>,
    /// Who was told the room closed and has not gone back to the lock since.
    told: BTreeSet<(ProcessId, u32)>,
}

impl World {
    /// Carries out a room action of `process`'s election; the answer to an
    /// [`ElectionOutput::EnterWaitingRoom`].
    pub(super) fn room_action(
        &mut self,
        process: ProcessId,
        action: ElectionOutput,
    ) -> Option<ElectionInput> {
        let seat = (process, self.processes[process].incarnation);
        match action {
            // The name now leads here, as a new socket file replaces an old one.
            ElectionOutput::OpenWaitingRoom => {
                self.rooms.reachable = Some(process);
                self.rooms.seats.entry(process).or_default();
            }
            ElectionOutput::CloseWaitingRoom if self.rooms.seats.contains_key(&process) => {
                self.close_room(process);
            }
            ElectionOutput::CloseWaitingRoom => self
                .violations
                .push(format!("p{process} closes a waiting room it does not hold")),
            ElectionOutput::EnterWaitingRoom => {
                let room = self
                    .rooms
                    .reachable
                    .and_then(|holder| self.rooms.seats.get_mut(&holder));
                return Some(match room {
                    Some(seats) => {
                        seats.insert(seat);
                        ElectionInput::InWaitingRoom
                    }
                    None => ElectionInput::NoWaitingRoom,
                });
            }
            ElectionOutput::LeaveWaitingRoom => {
                if self.rooms.told.contains(&seat) {
                    self.violations.push(format!(
                        "p{process} leaves a waiting room it was told had closed"
                    ));
                }
                for seats in self.rooms.seats.values_mut() {
                    seats.remove(&seat);
                }
            }
            _ => {}
        }
        None
    }

    /// `process` tries the lock again: whatever room it was told of is behind it.
    pub(super) fn back_to_the_lock(&mut self, process: ProcessId) {
        let incarnation = self.processes[process].incarnation;
        self.rooms.told.remove(&(process, incarnation));
    }

    /// Everyone waiting in `holder`'s room is told, each when its connection's end reaches
    /// it.
    fn close_room(&mut self, holder: ProcessId) {
        if self.rooms.reachable == Some(holder) {
            self.rooms.reachable = None;
        }
        let seats = self.rooms.seats.remove(&holder).unwrap_or_default();
        for (process, incarnation) in seats {
            let delay = self.rand(0, 200);
            self.schedule(
                delay,
                Event::RoomClosed {
                    process,
                    incarnation,
                },
            );
        }
    }

    /// `process` is told its room closed.
    pub(super) fn room_closed(&mut self, process: ProcessId, incarnation: u32) {
        self.rooms.told.insert((process, incarnation));
        self.trace.line(
            self.now,
            format_args!("p{process}: its waiting room closed"),
        );
        let now = self.timestamp();
        let closed = ProcessInput::Election(ElectionInput::WaitingRoomClosed);
        self.processes[process].machine.handle_input(now, closed);
        self.pump(process);
    }

    /// A process that dies closes its room and leaves any it waited in, as the kernel
    /// closes its sockets.
    pub(super) fn rooms_after_crash(&mut self, process: ProcessId) {
        for seats in self.rooms.seats.values_mut() {
            seats.retain(|(seated, _)| *seated != process);
        }
        if self.rooms.seats.contains_key(&process) {
            self.close_room(process);
        }
    }

    /// A leader serving with its room open leaves those in it waiting for nothing.
    pub(super) fn check_room(&mut self, process: ProcessId) {
        // A leader that lost its lock drains its followers while it runs for the lock again.
        let serving = self.processes[process]
            .leading
            .as_ref()
            .is_some_and(|leading| !leading.draining);
        if self.rooms.seats.contains_key(&process) && serving {
            self.violations.push(format!(
                "p{process} serves with its waiting room still open"
            ));
        }
    }
}

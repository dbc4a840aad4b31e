//! The waiting room, as party-core's Unix sockets behave: the lock holder opens one, those
//! who find nobody listening wait in it, and closing it (or the holder's death) tells each
//! of them, a little later. Checked: a leader never serves with its room still open (those
//! waiting would wait for nothing), and a process never leaves a room it is not in (one it
//! was told had closed, or never let into).

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A process's seat in a room: the process, its incarnation, and which of its entries.
type Seat = (ProcessId, u32, u64);

/// The rooms of one data directory: one at most is reachable by its name, but a holder
/// whose lock was taken away (a virtual lock) keeps its own open until it gives it back.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    /// Whose room the name leads to, if anyone's.
    reachable: Option<ProcessId>,
    /// The open rooms, by holder, and who waits in each.
    seats: BTreeMap<ProcessId, BTreeSet<Seat>>,
    /// Seats of closed rooms whose end has not reached them yet: a seat left meanwhile is
    /// told nothing, as a connection dropped hears nothing more.
    closing: BTreeSet<Seat>,
    entries: u64,
}

impl World {
    /// Carries out a room action of `process`'s election; the answer to an
    /// [`ElectionOutput::EnterWaitingRoom`].
    pub(super) fn room_action(
        &mut self,
        process: ProcessId,
        action: ElectionOutput,
    ) -> Option<ElectionInput> {
        let incarnation = self.processes[process].incarnation;
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
                        self.rooms.entries += 1;
                        seats.insert((process, incarnation, self.rooms.entries));
                        ElectionInput::InWaitingRoom
                    }
                    None => ElectionInput::NoWaitingRoom,
                });
            }
            ElectionOutput::LeaveWaitingRoom => {
                let its = |(p, i, _): Seat| (p, i) == (process, incarnation);
                if !self.rooms.sits(its) {
                    self.violations.push(format!(
                        "p{process} leaves a waiting room it is not in (told it had closed, \
                         or never let in)"
                    ));
                }
                self.rooms.leave(its);
            }
            _ => {}
        }
        None
    }

    /// `process` tries the lock again: from its seat, if its patience ran out in a room.
    pub(super) fn look_again(&mut self, process: ProcessId) {
        let incarnation = self.processes[process].incarnation;
        if self
            .rooms
            .sits(|(p, i, _)| (p, i) == (process, incarnation))
        {
            self.trace.line(
                self.now,
                format_args!("p{process} looks again from its seat"),
            );
        }
    }

    /// Everyone waiting in `holder`'s room is told, each when its connection's end reaches
    /// it.
    fn close_room(&mut self, holder: ProcessId) {
        if self.rooms.reachable == Some(holder) {
            self.rooms.reachable = None;
        }
        let seats = self.rooms.seats.remove(&holder).unwrap_or_default();
        for seat in seats {
            let (process, incarnation, entry) = seat;
            self.rooms.closing.insert(seat);
            let delay = self.rand(0, 200);
            self.schedule(
                delay,
                Event::RoomClosed {
                    process,
                    incarnation,
                    entry,
                },
            );
        }
    }

    /// The end of a closed room reaches the seat `entry` of `process`, if it still sits.
    pub(super) fn room_closed(&mut self, process: ProcessId, incarnation: u32, entry: u64) {
        if !self.rooms.closing.remove(&(process, incarnation, entry)) {
            return;
        }
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
        self.rooms.leave(|(seated, _, _)| seated == process);
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

impl Rooms {
    /// Whether a seat `picked` picks is in a room, open or closing.
    fn sits(&self, picked: impl Fn(Seat) -> bool) -> bool {
        let mut seats = self.seats.values().flatten().chain(&self.closing);
        seats.any(|seat| picked(*seat))
    }

    /// The seats `left` picks go, from open rooms and closing ones.
    fn leave(&mut self, left: impl Fn(Seat) -> bool) {
        for seats in self.seats.values_mut() {
            seats.retain(|seat| !left(*seat));
        }
        self.closing.retain(|seat| !left(*seat));
    }
}

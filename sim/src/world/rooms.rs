//! The waiting room, as party-core's Unix sockets behave: the lock holder opens one, those
//! who find nobody listening sit in it on a connection of their own (their hello waits
//! there, unread), and a holder that comes to serve takes every seat as a follower
//! connection before it closes the room; closing it otherwise (giving up, or dying) ends
//! each seat's connection. Checked: a leader never serves with its room still open (those
//! waiting would wait for nothing), and a process never leaves a room it is not in (one
//! whose seat ended, or that never let it in).

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A seat in a room: its connection (numbered in the order made, the order the holder
/// takes them in, as a listener's queue), the process, and its incarnation.
type Seat = (ConnId, ProcessId, u32);

/// The rooms of one data directory: one at most is reachable by its name, but a holder
/// whose lock was taken away (a virtual lock) keeps its own open until it gives it back.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    /// Whose room the name leads to, if anyone's.
    reachable: Option<ProcessId>,
    /// The open rooms, by holder, and who waits in each.
    seats: BTreeMap<ProcessId, BTreeSet<Seat>>,
}

impl World {
    /// Carries out a room action of `process`'s election; the answer to an
    /// [`ElectionOutput::EnterWaitingRoom`] when there is no room (a seat is told to the
    /// machine here).
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
                let Some(holder) = self
                    .rooms
                    .reachable
                    .filter(|holder| self.rooms.seats.contains_key(holder))
                else {
                    return Some(ElectionInput::NoWaitingRoom);
                };
                let conn = self.open_conn(process, holder, true);
                if let Some(seats) = self.rooms.seats.get_mut(&holder) {
                    seats.insert((conn, process, incarnation));
                }
                let now = self.timestamp();
                let seated = ProcessInput::Seated {
                    peer_uid: Some(SIM_USER),
                };
                self.processes[process].machine.handle_input(now, seated);
            }
            ElectionOutput::LeaveWaitingRoom => {
                // Perhaps taken by now: the machine, looking again from its seat, leaves it
                // rather than follow there.
                let seat = self.processes[process]
                    .link
                    .filter(|conn| self.conns.get(conn).is_some_and(|c| c.from_room));
                match seat {
                    Some(conn) => {
                        if self.conns.get(&conn).is_some_and(|c| !c.seated) {
                            self.trace.line(
                                self.now,
                                format_args!("p{process} leaves its seat, taken meanwhile"),
                            );
                            // Taken, and followed there: leaving it would cut the follower's
                            // connection under its machine.
                            if self.processes[process].machine.role().role == Role::Follower {
                                self.violations
                                    .push(format!("p{process} leaves the seat it follows on"));
                            }
                        }
                        self.processes[process].link = None;
                        self.rooms.leave(|(seated, _, _)| seated == conn);
                        self.close_conn(conn);
                    }
                    None => self.violations.push(format!(
                        "p{process} leaves a waiting room it is not in (its seat ended, or it \
                         was never let in)"
                    )),
                }
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
            .sits(|(_, p, i)| (p, i) == (process, incarnation))
        {
            self.trace.line(
                self.now,
                format_args!("p{process} looks again from its seat"),
            );
        }
    }

    /// A holder that serves takes every seat still open as a follower connection, and
    /// reads the hello waiting on it; any other close ends them, each seat told when its
    /// connection's end reaches it.
    fn close_room(&mut self, holder: ProcessId) {
        if self.rooms.reachable == Some(holder) {
            self.rooms.reachable = None;
        }
        let serving = self.processes[holder].alive
            && self.processes[holder]
                .leading
                .as_ref()
                .is_some_and(|leading| !leading.draining);
        let seats = self.rooms.seats.remove(&holder).unwrap_or_default();
        for (conn, process, _) in seats {
            if !serving {
                self.close_conn(conn);
                continue;
            }
            let term = self.processes[holder].leading.as_ref().map(|l| l.term);
            let Some(c) = self.conns.get_mut(&conn).filter(|c| c.open) else {
                continue;
            };
            c.seated = false;
            c.term = term;
            let held_back = std::mem::take(&mut c.held_back);
            self.trace.line(
                self.now,
                format_args!("p{holder} takes the seat of p{process} (conn{conn})"),
            );
            if !self.refused(conn, holder) {
                self.open_session(conn, holder);
            }
            // Read as what comes later is (by the session, if any), within the holder's
            // own pump, which carries out what its session says next.
            let _ = self.take_delivery(conn, true, &held_back);
        }
    }

    /// A process that dies closes its room (the kernel ends every seat's connection, as
    /// every other of its connections).
    pub(super) fn rooms_after_crash(&mut self, process: ProcessId) {
        self.rooms.leave(|(_, seated, _)| seated == process);
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
    /// Whether a seat `picked` picks is in an open room.
    fn sits(&self, picked: impl Fn(Seat) -> bool) -> bool {
        self.seats.values().flatten().any(|seat| picked(*seat))
    }

    /// The seats `left` picks go.
    pub(super) fn leave(&mut self, left: impl Fn(Seat) -> bool) {
        for seats in self.seats.values_mut() {
            seats.retain(|seat| !left(*seat));
        }
    }
}

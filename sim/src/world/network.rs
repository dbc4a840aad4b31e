//! The network: connections as byte pipes that cut frames into random chunks and deliver
//! them late, in order within a connection and in any order across connections.

use super::*;
use bytes::BufMut;

impl World {
    pub(super) fn connect(&mut self, process: ProcessId) -> ElectionInput {
        let Some(server) = self.listening_leader() else {
            return ElectionInput::ConnectFailed;
        };
        if self.processes[server]
            .leading
            .as_ref()
            .is_some_and(|leading| leading.draining)
        {
            // party-core stops listening when it steps down: newcomers must not attach to
            // a leader on its way out.
            self.violations.push(format!(
                "p{process} reaches p{server}'s socket, which it stopped listening on when it \
                 stepped down"
            ));
        }
        // Made from a seat, the connection takes its place, as party-core's driver drops
        // the seat's.
        if let Some(seat) = self.processes[process].link.take() {
            self.rooms.leave(|(conn, _, _)| conn == seat);
            self.close_conn(seat);
        }
        let conn = self.open_conn(process, server, false);
        if self.refused(conn, server) {
            return ElectionInput::Connected;
        }
        if self.faults.foreign_peers && self.faults_on && self.chance(10) {
            // Another user's process answered: the client must refuse it unheard.
            self.trace
                .line(self.now, format_args!("conn{conn} reaches another user"));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.foreign = true;
            }
            return ElectionInput::Connected;
        }
        if self.faults.mute_peers && self.faults_on && self.chance(10) {
            // Accepted, and never answered: no session reads what the client sends.
            self.trace
                .line(self.now, format_args!("conn{conn} is never answered"));
            return ElectionInput::Connected;
        }
        self.open_session(conn, server);
        ElectionInput::Connected
    }

    /// The leader whose socket a connect reaches, if one listens.
    pub(super) fn listening_leader(&self) -> Option<ProcessId> {
        self.listener
            .filter(|l| self.processes[*l].alive && self.processes[*l].leading.is_some())
    }

    /// A new connection of `client` to `server`'s socket, or (`seated`) its waiting room;
    /// the client's link from now on.
    pub(super) fn open_conn(
        &mut self,
        client: ProcessId,
        server: ProcessId,
        seated: bool,
    ) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                client,
                server,
                open: true,
                server_decoder: FrameDecoder::new(self.frame_limit()),
                client_decoder: FrameDecoder::new(self.frame_limit()),
                last_to_server: self.now,
                last_to_client: self.now,
                ended_by: TakeoverCause::Crash,
                heard: None,
                served: false,
                foreign: false,
                term: self.processes[server].leading.as_ref().map(|l| l.term),
                cut_short: false,
                from_room: seated,
                seated,
                held_back: Vec::new(),
                ring_decided: false,
                ring: None,
            },
        );
        self.processes[client].link = Some(conn);
        conn
    }

    /// Whether `server` turns the connection away: on seeds with refusals a leader serves
    /// at most [`MOST_FOLLOWERS`], as party-core's accept loop decides; one more is told
    /// why, and hung up on.
    pub(super) fn refused(&mut self, conn: ConnId, server: ProcessId) -> bool {
        let connected = self.processes[server]
            .leading
            .as_ref()
            .map_or(0, |leading| leading.sessions.len() as u32);
        let peer = PeerFacts {
            uid: None,
            owner: None,
            connected,
            max_connections: if self.faults.refusals {
                MOST_FOLLOWERS
            } else {
                u32::MAX
            },
        };
        let Err(refusal) = admit_peer(peer) else {
            return false;
        };
        self.send_to_client(conn, &ServerMessage::Rejected(refusal));
        self.close_conn(conn);
        true
    }

    /// `server` serves the connection: a session reads what comes on it.
    pub(super) fn open_session(&mut self, conn: ConnId, server: ProcessId) {
        let now = self.timestamp();
        let session = ServerSession::new(
            now,
            self.server_config(
                server,
                self.processes[server].store,
                self.processes[server].change_feed,
            ),
        );
        if let Some(leading) = &mut self.processes[server].leading {
            // Every way in asks `refused` first (and so `admit_peer`, as party-core's accept
            // loop does): one more over the limit came in unasked, or was let in.
            if self.faults.refusals && leading.sessions.len() >= MOST_FOLLOWERS as usize {
                self.violations.push(format!(
                    "p{server} serves conn{conn} beside {} followers, over its limit of \
                     {MOST_FOLLOWERS}",
                    leading.sessions.len()
                ));
            }
            leading.sessions.insert(conn, session);
        }
    }

    /// One of the open connections, picked by the seed.
    pub(super) fn random_open_conn(&mut self) -> Option<ConnId> {
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open)
            .map(|(id, _)| *id)
            .collect();
        if open.is_empty() {
            return None;
        }
        Some(open[(self.rng.next_u64() % open.len() as u64) as usize])
    }

    /// Frames a follower's `message` as a follower does ([`Outgoing`]), lending every put's
    /// value that is not empty (a follower lends big ones only, bigger than the
    /// simulator's), at the seed's limit, and sends it.
    pub(super) fn send_to_server(&mut self, conn: ConnId, message: &ClientMessage) {
        let mut outgoing = Outgoing::lending_from(1);
        let framed = outgoing.push_client(message, self.frame_limit());
        self.transmit_framed(conn, true, message, framed.map(|()| gathered(&outgoing)));
    }

    /// Frames a leader's `message` as a leader does, lending every value that is not
    /// empty, and sends it.
    pub(super) fn send_to_client(&mut self, conn: ConnId, message: &ServerMessage) {
        let leaving = matches!(message, ServerMessage::Leaving(_));
        let in_ring = self.through_ring(conn, message);
        let sent = in_ring.as_ref().unwrap_or(message);
        let mut outgoing = Outgoing::lending_from(1);
        let framed = outgoing.push_server(sent, self.frame_limit());
        let framed_len = (in_ring.is_none() && framed.is_ok()).then(|| outgoing.len());
        self.check_reply_bound(conn, message, framed_len);
        self.transmit_framed(conn, false, sent, framed.map(|()| gathered(&outgoing)));
        if leaving && self.faults.garbage && self.faults_on && self.chance(25) {
            // Right behind the leader's word of why it leaves, which the follower has
            // read by then: the failover it tells of keeps that cause.
            self.trace.line(
                self.now,
                format_args!("garbage down conn{conn} after a Leaving"),
            );
            self.transmit_garbage(conn, false);
        }
    }

    /// A leader judges whether an answer fits a frame by its bound, before it encodes it:
    /// one whose bound is over the frame limit fails alone (`ReplyTooLarge`) rather than
    /// being sent, and no frame (`framed_len`, where the answer went whole down the
    /// socket) may be longer than its answer's bound (or an answer the leader judged to fit
    /// could break the connection, with values bigger than this world writes).
    fn check_reply_bound(
        &mut self,
        conn: ConnId,
        message: &ServerMessage,
        framed_len: Option<usize>,
    ) {
        let ServerMessage::Reply {
            id,
            result: Ok(response),
        } = message
        else {
            return;
        };
        let (bound, limit) = (response.reply_len_bound(), u64::from(self.frame_limit()));
        if bound > limit {
            self.violations.push(format!(
                "conn{conn} {id:?}: an answer bounded at {bound} bytes sent, over the \
                 {limit}-byte frame limit"
            ));
        }
        if let Some(framed_len) = framed_len.filter(|len| *len as u64 > bound) {
            self.violations.push(format!(
                "conn{conn} {id:?}: a {framed_len}-byte frame for an answer bounded at {bound}"
            ));
        }
    }

    /// Sends a frame header far over any limit, between two frames: the reader must give
    /// the connection up.
    pub(super) fn transmit_garbage(&mut self, conn: ConnId, to_server: bool) {
        self.transmit(conn, to_server, vec![0xff; 4]);
    }

    /// Sends a framed message; one the machines let grow past the limit is a violation.
    fn transmit_framed(
        &mut self,
        conn: ConnId,
        to_server: bool,
        message: &impl std::fmt::Debug,
        framed: Result<Vec<u8>, FrameError>,
    ) {
        match framed {
            Ok(bytes) => self.transmit(conn, to_server, bytes),
            Err(error) => self
                .violations
                .push(format!("conn{conn}: {message:?} did not encode: {error}")),
        }
    }

    pub(super) fn transmit(&mut self, conn: ConnId, to_server: bool, mut bytes: Vec<u8>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        let mut last = if to_server {
            c.last_to_server
        } else {
            c.last_to_client
        };
        while !bytes.is_empty() {
            let cut = (self.rand(1, 64) as usize).min(bytes.len());
            let rest = bytes.split_off(cut);
            last = last.max(self.now) + self.rand(1, 200);
            self.schedule_at(
                last,
                Event::Deliver {
                    conn,
                    to_server,
                    bytes,
                },
            );
            bytes = rest;
        }
        let c = self.conns.get_mut(&conn).expect("checked above");
        if to_server {
            c.last_to_server = last;
        } else {
            c.last_to_client = last;
        }
    }

    /// Both ends learn the connection is gone, after what was already on its way.
    pub(super) fn close_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        c.open = false;
        let (to_server_at, to_client_at) = (
            c.last_to_server.max(self.now) + 1,
            c.last_to_client.max(self.now) + 1,
        );
        self.schedule_at(
            to_server_at,
            Event::Closed {
                conn,
                to_server: true,
            },
        );
        self.schedule_at(
            to_client_at,
            Event::Closed {
                conn,
                to_server: false,
            },
        );
    }

    pub(super) fn deliver(&mut self, conn: ConnId, to_server: bool, bytes: &[u8]) {
        if let Some(process) = self.take_delivery(conn, to_server, bytes) {
            self.pump(process);
        }
    }

    /// Hands what arrived to the machine at its end, without carrying out what it says:
    /// the process to pump, if any.
    pub(super) fn take_delivery(
        &mut self,
        conn: ConnId,
        to_server: bool,
        bytes: &[u8],
    ) -> Option<ProcessId> {
        let c = self.conns.get_mut(&conn)?;
        if to_server && c.seated {
            c.held_back.extend_from_slice(bytes);
            return None;
        }
        let process = if to_server { c.server } else { c.client };
        if c.foreign && to_server {
            self.violations.push(format!(
                "conn{conn}: p{} told a process of another user something",
                c.client
            ));
            return None;
        }
        let decoder = if to_server {
            &mut c.server_decoder
        } else {
            &mut c.client_decoder
        };
        let mut input = bytes;
        let mut decoded = Vec::new();
        let mut failed = None;
        loop {
            // The rest of a frame under way straight into the decoder first, as real
            // connections read a big frame's (here whatever its size, to reach that path).
            if let Some(mut frame) = decoder.unfinished_frame(1) {
                let direct = input.len().min(frame.remaining_mut());
                frame.put_slice(&input[..direct]);
                input = &input[direct..];
            }
            if to_server {
                match decoder.decode::<ClientMessage>(&mut input) {
                    Ok(Some(message)) => decoded.push(Ok(message)),
                    Ok(None) => break,
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            } else {
                match decoder.decode::<ServerMessage>(&mut input) {
                    Ok(Some(message)) => decoded.push(Err(message)),
                    Ok(None) => break,
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
        }
        if let Some(error) = &failed {
            if !self.faults.garbage {
                self.violations.push(format!(
                    "conn{conn}: frames did not decode at {}us, to the {}: {error}",
                    self.now,
                    if to_server { "server" } else { "client" }
                ));
            }
        }
        if !self.processes[process].alive {
            return None;
        }
        let now = self.timestamp();
        for message in decoded {
            match message {
                Ok(request) => {
                    if let Some(leading) = &mut self.processes[process].leading {
                        if let Some(session) = leading.sessions.get_mut(&conn) {
                            session.handle_input(now, ServerInput::Message(request));
                        }
                    }
                }
                Err(reply) => {
                    let Some(reply) = self.out_of_ring(conn, reply) else {
                        continue;
                    };
                    self.maybe_offer_ring(conn, &reply);
                    if let (ServerMessage::Leaving(cause), Some(c)) =
                        (&reply, self.conns.get_mut(&conn))
                    {
                        c.heard = Some(TakeoverCause::from(*cause));
                    }
                    if self.processes[process].link == Some(conn) {
                        let machine = &mut self.processes[process].machine;
                        machine.handle_input(now, ProcessInput::FromLeader(reply));
                        if let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.served) {
                            c.served = machine.role().role == Role::Follower;
                        }
                    }
                }
            }
        }
        if !to_server {
            self.tell_ring_taken(conn);
        }
        if let Some(error) = failed {
            if to_server {
                if let Some(leading) = &mut self.processes[process].leading {
                    if let Some(session) = leading.sessions.get_mut(&conn) {
                        session.handle_input(now, ServerInput::BadFrame(error));
                    }
                }
            } else if self.processes[process].link == Some(conn) {
                self.processes[process].link = None;
                // A crash, unless the client read why its leader left before the garbage.
                let heard = self.conns.get(&conn).and_then(|c| c.heard);
                if let Some(cause) = heard {
                    self.trace.line(
                        self.now,
                        format_args!("p{process} reads garbage after its leader left ({cause:?})"),
                    );
                }
                self.leader_lost(process, heard.unwrap_or(TakeoverCause::Crash));
                let broken = ErrorCode::Malformed(format!("from the leader: {error}"));
                self.processes[process]
                    .machine
                    .handle_input(now, ProcessInput::LinkBroken(broken));
                self.close_conn(conn);
            }
        }
        Some(process)
    }

    pub(super) fn closed(&mut self, conn: ConnId, to_server: bool) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let process = if to_server { c.server } else { c.client };
        let ended_by = c.ended_by;
        // A seat carried nothing in flight.
        let cut_short = c.cut_short && !c.seated;
        if !to_server {
            self.conns.remove(&conn);
        }
        if !self.processes[process].alive {
            return;
        }
        let now = self.timestamp();
        let p = &mut self.processes[process];
        if to_server {
            if let Some(leading) = &mut p.leading {
                leading.sessions.remove(&conn);
                leading.iters.retain(|(c, _), _| *c != conn);
                leading.chunks_due.retain(|(c, _), _| *c != conn);
                if leading.draining && leading.sessions.is_empty() {
                    return self.drained(process, "its followers let go");
                }
            }
        } else if p.link == Some(conn) {
            p.link = None;
            self.answers_lost(process);
            self.leader_lost(process, ended_by);
            self.processes[process].cut_short |= cut_short;
            let p = &mut self.processes[process];
            p.machine.handle_input(now, ProcessInput::LinkClosed);
        }
        self.pump(process);
    }
}

/// The bytes of `outgoing` in order, gathered two slices at a time as a socket write would.
fn gathered(outgoing: &Outgoing) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(outgoing.len());
    let mut slices = [std::io::IoSlice::new(&[]); 2];
    loop {
        let filled = outgoing.slices(bytes.len(), &mut slices);
        if filled == 0 {
            return bytes;
        }
        for slice in &slices[..filled] {
            bytes.extend_from_slice(slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that are no frame, reaching either end of a connection, are a violation on a
    /// seed that sends no garbage (what a machine or the world encoded is wrong), and
    /// excused on one that does.
    #[test]
    fn frames_that_do_not_decode_are_caught_unless_the_seed_sends_garbage() {
        for garbage in [false, true] {
            for to_server in [false, true] {
                let (mut world, conn) = World::connected();
                world.faults.garbage = garbage;
                // A length prefix past every frame limit.
                world.take_delivery(conn, to_server, &[0xff; 16]);
                assert_eq!(
                    world.violations.len(),
                    usize::from(!garbage),
                    "garbage {garbage}, to the server {to_server}: {:?}",
                    world.violations
                );
            }
        }
    }
}

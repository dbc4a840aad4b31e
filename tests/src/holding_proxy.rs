//! A TCP proxy in front of one gRPC server (an etcd member) that can hold what its clients
//! send for as long as a test wants: a request on the network when its sender is killed,
//! delivered to the server after. The connection to the server stays open when a client's
//! goes away, as the kernel of a killed process still sends what it had written.
//!
//! It reads HTTP/2 frames as they pass, only to know when every request it held has been
//! answered (the server ended each stream opened while holding). It can also lose those
//! answers and cut its clients' connections, as a failing network would: a client then
//! sends its request again, not knowing the first one landed. Or hold only the connections
//! open now, cut them, and pass the new ones: a request stays on the network while its
//! client, cut off, sends it again, and the copy arrives first.

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a client sends first on an HTTP/2 connection, before any frame.
const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;

/// The proxy; dropping it closes every connection.
pub struct HoldingProxy {
    endpoint: String,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    holding: bool,
    /// While holding, connections numbered from here on pass (`None`: none does).
    passing_from: Option<usize>,
    /// The number the next connection gets.
    next_connection: usize,
    /// Everything clients sent while holding, in arrival order (of all connections).
    held: Vec<u8>,
    /// Streams (connection, stream id) a client opened while holding, not yet ended by
    /// the server.
    unanswered: HashSet<(usize, u32)>,
    /// The connections to the server, to close when the proxy goes.
    upstreams: Vec<TcpStream>,
    /// The connections of clients, to cut after losing answers.
    clients: Vec<TcpStream>,
    /// The server's answers go nowhere.
    losing_answers: bool,
    closed: bool,
}

impl std::fmt::Debug for HoldingProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldingProxy")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl HoldingProxy {
    /// Listens on a loopback port, forwarding each connection to `upstream`
    /// (`http://host:port`).
    pub fn start(upstream: &str) -> HoldingProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// endpoint")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for (connection, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                if accepting.state.lock().unwrap().closed {
                    return;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                forward(connection, client, server, &accepting);
            }
        });
        HoldingProxy { endpoint, shared }
    }

    /// The endpoint clients connect to instead of the server.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// From now on what clients send is kept here, not sent on.
    pub fn hold(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.holding = true;
        state.passing_from = None;
    }

    /// From now on what clients send on the connections open now is kept here; what they
    /// send on new ones goes on.
    pub fn hold_open_connections(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.holding = true;
        state.passing_from = Some(state.next_connection);
    }

    /// Cuts every client's connection, keeping what was held for the server: the clients
    /// connect again.
    pub fn cut_clients(&self) {
        for client in self.shared.state.lock().unwrap().clients.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
        }
    }

    /// Waits until what clients sent while holding contains `bytes`; panics after
    /// `timeout`.
    pub fn wait_held(&self, bytes: &[u8], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        while !state.held.windows(bytes.len()).any(|w| w == bytes) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{} never sent", bytes.escape_ascii());
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Sends on everything held, and waits until the server answered each request among
    /// it (ended its stream), or the client reset the stream (gave up on it: the server
    /// may still apply it, but answers nothing); panics after `timeout`.
    pub fn release(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        state.holding = false;
        state.passing_from = None;
        self.shared.changed.notify_all();
        while !state.unanswered.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "held requests never answered");
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Sends on everything held, as [`HoldingProxy::release`], but loses what the server
    /// answers (to every connection) until it answered each held request; then cuts every
    /// client's connection and holds again, with nothing held: what a client sends again,
    /// on a new connection, is held.
    pub fn release_losing_answers(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        state.losing_answers = true;
        state.holding = false;
        self.shared.changed.notify_all();
        while !state.unanswered.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "held requests never answered");
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
        for client in state.clients.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
        }
        state.losing_answers = false;
        state.holding = true;
        state.held.clear();
    }
}

impl State {
    /// Whether what the client of `connection` sends is held now.
    fn holds(&self, connection: usize) -> bool {
        self.holding && self.passing_from.is_none_or(|from| connection < from)
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        for server in state.upstreams.drain(..) {
            let _ = server.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
        drop(state);
        // Wakes the accepting thread, which then sees `closed`.
        let _ = TcpStream::connect(self.endpoint.strip_prefix("http://").unwrap());
    }
}

/// Three threads for one connection: the client's bytes into a queue, the queue to the
/// server whenever not holding, the server's bytes back to the client.
fn forward(connection: usize, mut client: TcpStream, server: TcpStream, shared: &Arc<Shared>) {
    let queue = Arc::new(Mutex::new(VecDeque::<Vec<u8>>::new()));
    {
        let mut state = shared.state.lock().unwrap();
        state.upstreams.push(server.try_clone().unwrap());
        state.clients.push(client.try_clone().unwrap());
        state.next_connection = connection + 1;
    }

    let mut to_client = client.try_clone().unwrap();
    let (reading, into) = (shared.clone(), queue.clone());
    std::thread::spawn(move || {
        let mut frames = Frames::after_preface();
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = client.read(&mut buffer) {
            let bytes = &buffer[..read];
            let mut state = reading.state.lock().unwrap();
            for (kind, _, stream) in frames.feed(bytes) {
                if state.holds(connection) && kind == HEADERS {
                    state.unanswered.insert((connection, stream));
                }
                // A request the client gave up on (its time ran out) gets no answer.
                if kind == RST_STREAM {
                    state.unanswered.remove(&(connection, stream));
                }
            }
            if state.holds(connection) {
                state.held.extend_from_slice(bytes);
            }
            into.lock().unwrap().push_back(bytes.to_vec());
            reading.changed.notify_all();
        }
    });

    let (sending, from) = (shared.clone(), queue);
    let mut to_server = server.try_clone().unwrap();
    std::thread::spawn(move || loop {
        let mut state = sending.state.lock().unwrap();
        while !state.closed && (state.holds(connection) || from.lock().unwrap().is_empty()) {
            state = sending.changed.wait(state).unwrap();
        }
        if state.closed {
            return;
        }
        drop(state);
        let chunks: Vec<Vec<u8>> = from.lock().unwrap().drain(..).collect();
        for chunk in chunks {
            if to_server.write_all(&chunk).is_err() {
                return;
            }
        }
    });

    let answering = shared.clone();
    let mut from_server = server;
    std::thread::spawn(move || {
        let mut frames = Frames::default();
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from_server.read(&mut buffer) {
            let bytes = &buffer[..read];
            if !answering.state.lock().unwrap().losing_answers {
                // The client may be dead: what it would have got goes nowhere.
                let _ = to_client.write_all(bytes);
            }
            let mut state = answering.state.lock().unwrap();
            for (kind, flags, stream) in frames.feed(bytes) {
                if flags & END_STREAM != 0 || kind == RST_STREAM {
                    state.unanswered.remove(&(connection, stream));
                }
            }
            answering.changed.notify_all();
        }
    });
}

/// HTTP/2 frame headers read from a byte stream as it comes, in pieces of any size.
#[derive(Default)]
struct Frames {
    /// Bytes of the client preface still to skip.
    preface: usize,
    /// The start of a frame header not whole yet.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to skip.
    payload: usize,
}

impl Frames {
    fn after_preface() -> Frames {
        Frames {
            preface: CLIENT_PREFACE.len(),
            ..Frames::default()
        }
    }

    /// The (type, flags, stream id) of each frame whose header ends in `bytes`.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<(u8, u8, u32)> {
        let mut headers = Vec::new();
        loop {
            let skip = bytes.len().min(self.preface + self.payload);
            let from_preface = skip.min(self.preface);
            self.preface -= from_preface;
            self.payload -= skip - from_preface;
            bytes = &bytes[skip..];
            if bytes.is_empty() {
                return headers;
            }
            let wanted = (9 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..wanted]);
            bytes = &bytes[wanted..];
            if self.header.len() == 9 {
                let h = std::mem::take(&mut self.header);
                self.payload = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                headers.push((h[3], h[4], stream));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame headers are found whatever the pieces the bytes come in.
    #[test]
    fn frames_are_read_across_pieces() {
        let mut bytes = CLIENT_PREFACE.to_vec();
        // SETTINGS (4) of 6 bytes on stream 0, then HEADERS ending stream 3, 2 bytes.
        bytes.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
        bytes.extend_from_slice(&[0, 0, 2, HEADERS, END_STREAM, 0, 0, 0, 3, 9, 9]);
        for piece in [1, 2, 5, 9, 100] {
            let mut frames = Frames::after_preface();
            let found: Vec<_> = bytes.chunks(piece).flat_map(|p| frames.feed(p)).collect();
            assert_eq!(
                found,
                [(4, 0, 0), (HEADERS, END_STREAM, 3)],
                "pieces of {piece}"
            );
        }
    }
}

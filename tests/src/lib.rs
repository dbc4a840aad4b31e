//! Helpers for party's real-process tests: a [`Node`] is a `party-node` child process with
//! one handle, driven line by line.

mod holding_proxy;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use holding_proxy::HoldingProxy;

/// The processes that hold the election lock of the data directory `dir`, as the kernel
/// lists its file locks (`/proc/locks`): who leads, seen from outside, without waiting.
pub fn lock_holders(dir: &Path) -> Vec<u32> {
    file_lock_holders(&dir.join("party.lock"))
}

/// The processes that hold a lock on the file at `path` (a store's own lock file, say), as
/// `/proc/locks` lists them.
pub fn file_lock_holders(path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;

    let lock = std::fs::metadata(path).expect("a lock file");
    // `/proc/locks` names a file by its device's major and minor numbers and its inode.
    let dev = lock.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let file = format!("{major:02x}:{minor:02x}:{}", lock.ino());
    let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
    locks
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // A waiter's line has an arrow before its kind: party's tries never wait.
        .filter(|fields| fields.get(5) == Some(&file.as_str()) && !fields.contains(&"->"))
        .filter_map(|fields| fields[4].parse().ok())
        .collect()
}

/// The keys `party-node fill-edge N` writes: keys at the byte edges (empty, 0x00, 0xff,
/// prefixes of one another) and N 4-byte big-endian numbers, in no particular order.
pub fn edge_and_numbered_keys(count: u32) -> Vec<Vec<u8>> {
    let edges: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\xff",
        b"\xff\xff",
        b"a",
        b"a\x00",
        b"ab",
    ];
    let mut keys: Vec<Vec<u8>> = edges.iter().map(|k| k.to_vec()).collect();
    keys.extend((0..count).map(|n| n.to_be_bytes().to_vec()));
    keys
}

/// How long any single answer may take before a test fails instead of hanging.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How many lines every node's reader has read, and a wake-up for each: a test waits on it
/// for a line from any of several nodes.
static LINES_READ: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

fn lines_read() -> MutexGuard<'static, u64> {
    LINES_READ.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `party-node` process. Dropping it kills it (SIGKILL).
#[derive(Debug)]
pub struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Answer lines read while waiting for something else.
    pending: VecDeque<String>,
    role: String,
}

impl Node {
    /// Starts `party-node DIR ARGS…` from the binary at `exe`.
    pub fn spawn(exe: &str, dir: &Path, args: &[&str]) -> Node {
        let mut command = Command::new(exe);
        command.arg(dir).args(args);
        Node::spawn_command(command)
    }

    /// Starts `party-node DIR ARGS…` with these environment variables set.
    pub fn spawn_with_env(exe: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut command = Command::new(exe);
        command.arg(dir).args(args).envs(env.iter().copied());
        Node::spawn_command(command)
    }

    /// Starts `party-node DIR ARGS…` as the user `uid` (and group of the same number),
    /// which needs root.
    #[cfg(unix)]
    pub fn spawn_as(uid: u32, exe: &str, dir: &Path, args: &[&str]) -> Node {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(exe);
        command.arg(dir).args(args).uid(uid).gid(uid);
        Node::spawn_command(command)
    }

    /// Starts `command`, which runs a `party-node` (possibly through a wrapper).
    pub fn spawn_command(mut command: Command) -> Node {
        command.stderr(Stdio::inherit());
        Node::spawn_talking(command)
    }

    /// Starts `command` as [`Node::spawn_command`] does, with what it writes on stderr
    /// read here: each line comes out of the receiver, for a test to wait for one.
    pub fn spawn_command_reading_stderr(mut command: Command) -> (Node, Receiver<String>) {
        command.stderr(Stdio::piped());
        let mut node = Node::spawn_talking(command);
        let stderr = node.child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            // Read to the end even once nobody listens: a full pipe would block the node.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (node, lines)
    }

    /// Starts `command`, its stdin and stdout the node's lines.
    fn spawn_talking(mut command: Command) -> Node {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn party-node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
                *lines_read() += 1;
                LINES_READ.1.notify_all();
            }
        });
        Node {
            child,
            stdin,
            lines,
            pending: VecDeque::new(),
            role: "electing".into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last role the node reported.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Sends a command without waiting for its answer.
    pub fn submit(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("node stdin");
        self.stdin.flush().expect("node stdin");
    }

    /// Sends a command and returns its answer line.
    pub fn send(&mut self, command: &str) -> String {
        self.submit(command);
        self.answer()
    }

    /// The next answer line (role lines are recorded, not returned).
    pub fn answer(&mut self) -> String {
        if let Some(line) = self.pending.pop_front() {
            return line;
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let line = self
                .next_line(deadline)
                .expect("the node did not answer in time");
            if !self.note_role(&line) {
                return line;
            }
        }
    }

    /// The next answer if one has arrived, without waiting.
    pub fn try_answer(&mut self) -> Option<String> {
        self.poll_roles();
        self.pending.pop_front()
    }

    /// Waits until the node reports `role`; false if it has not within `timeout`.
    pub fn wait_role(&mut self, role: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.role != role {
            let Some(line) = self.next_line(deadline) else {
                return false;
            };
            if !self.note_role(&line) {
                self.pending.push_back(line);
            }
        }
        true
    }

    /// Waits until one of `nodes` reports `role`: its index, or `None` if none has within
    /// `timeout`.
    pub fn wait_any_role(nodes: &mut [Node], role: &str, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let read_before = *lines_read();
            for (at, node) in nodes.iter_mut().enumerate() {
                node.poll_roles();
                if node.role == role {
                    return Some(at);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            // A line read since `read_before` ends the wait at once: none is missed.
            let _ = LINES_READ
                .1
                .wait_timeout_while(lines_read(), left, |read| *read == read_before);
        }
    }

    /// Reads role lines already printed, without waiting.
    pub fn poll_roles(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            if !self.note_role(&line) {
                self.pending.push_back(line);
            }
        }
    }

    /// SIGSTOP: the process stays, holding its lock and socket, and does nothing. Returns
    /// once every thread of it has stopped: one thread takes the signal and stops the
    /// others, which run on until it gets a core (under load, long enough to serve a
    /// request sent meanwhile).
    pub fn stop(&self) {
        signal("STOP", self.pid());
        #[cfg(unix)]
        {
            use rustix::process::{waitpid, Pid, WaitOptions};
            let pid = i32::try_from(self.pid()).ok().and_then(Pid::from_raw);
            let pid = pid.expect("a child's process id");
            match waitpid(Some(pid), WaitOptions::UNTRACED) {
                Ok(Some((_, status))) if status.stopped() => {}
                other => panic!("the node did not stop: {other:?}"),
            }
        }
    }

    /// SIGCONT: a stopped process goes on.
    pub fn cont(&self) {
        signal("CONT", self.pid());
    }

    /// SIGKILL, without waiting: the process may still be going away (closing its files)
    /// when this returns.
    pub fn sigkill(&self) {
        signal("KILL", self.pid());
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.role = "dead".into();
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for node")
    }

    /// Waits at most `timeout` for the process to end by itself (its output ends with it):
    /// its exit status, or `None` if it still runs. Lines it printed meanwhile are kept.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if !self.note_role(&line) {
                        self.pending.push_back(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => return Some(self.wait_exit()),
            }
        }
    }

    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("node {} exited", self.pid()),
        }
    }

    fn note_role(&mut self, line: &str) -> bool {
        match line.strip_prefix("role ") {
            Some(rest) => {
                self.role = rest.split_whitespace().next().unwrap_or("").to_owned();
                true
            }
            None => false,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `kill -NAME` to `pid`.
fn signal(name: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The output of `command` run to its end, or `None` (and the process killed) if it has
/// not ended within [`ANSWER_TIMEOUT`].
pub fn output_within_timeout(command: &mut Command) -> Option<std::process::Output> {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let pid = child.id();
    let (done, finished) = channel();
    std::thread::spawn(move || done.send(child.wait_with_output().expect("wait for it")));
    let output = finished.recv_timeout(ANSWER_TIMEOUT).ok();
    if output.is_none() {
        signal("KILL", pid);
    }
    output
}

/// The files of the processes' recordings in `dir` (`PARTY_RECORD`), in the order they
/// were written; fails if there are none.
pub fn recorded_processes(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains("-process-"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "nothing recorded in {}", dir.display());
    files
}

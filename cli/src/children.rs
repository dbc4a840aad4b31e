//! The child processes of the demo, the bench and chaos: workers of this same binary,
//! chosen by an environment variable so that no directory name on the command line can
//! start one. A child is killed when its handle is dropped, so no error path leaves one
//! running; an interrupted parent (Ctrl-C, SIGTERM) kills its children and removes its
//! temporary directories before it exits.

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::failure::Failure;

/// The variable that makes this binary a worker; its value names the worker.
pub const WORKER: &str = "PARTY_INTERNAL_WORKER";

/// What an interrupted parent cleans up.
static LEFT_OVER: Mutex<LeftOver> = Mutex::new(LeftOver {
    pids: Vec::new(),
    dirs: Vec::new(),
});

struct LeftOver {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

fn left_over() -> std::sync::MutexGuard<'static, LeftOver> {
    LEFT_OVER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running worker; killed and reaped when dropped.
pub struct Worker(Child);

impl Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Forgotten before it is reaped: a reaped pid may be reused by another process.
        let pid = self.0.id();
        left_over().pids.retain(|p| *p != pid);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the worker `name` with `args`; its stdin and stdout are piped to us, its stderr
/// is ours.
pub fn spawn<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Result<Worker, Failure> {
    start(name, args, Stdio::inherit())
}

/// Starts the worker `name` with `args` as [`spawn`] does, but with its stderr piped to
/// us too, for [`Worker::forward_errors`].
pub fn spawn_with_errors<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Result<Worker, Failure> {
    start(name, args, Stdio::piped())
}

fn start<S: AsRef<OsStr>>(name: &str, args: &[S], stderr: Stdio) -> Result<Worker, Failure> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let child = Command::new(exe)
        .env(WORKER, name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start a {name} process: {e}"))?;
    left_over().pids.push(child.id());
    Ok(Worker(child))
}

/// A temporary directory, removed when dropped and when the process is interrupted.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir, Failure> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        left_over().dirs.push(dir.path().to_owned());
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let path = self.0.path().to_owned();
        left_over().dirs.retain(|d| *d != path);
    }
}

/// On SIGINT, SIGTERM or SIGHUP: kills the children still running, removes the temporary
/// directories, and exits with 128 + the signal's number, as a shell reports it.
pub fn clean_up_when_interrupted() -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let mut hangup = listen(SignalKind::hangup())?;
    tokio::spawn(async move {
        let number = tokio::select! {
            _ = interrupt.recv() => 2,
            _ = terminate.recv() => 15,
            _ = hangup.recv() => 1,
        };
        let left = left_over();
        let pids: Vec<_> = left
            .pids
            .iter()
            .filter_map(|pid| rustix::process::Pid::from_raw(*pid as i32))
            .collect();
        for &pid in &pids {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        // Gone before their directories go: a child between two writes into one would
        // leave it not empty.
        for &pid in &pids {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
        for dir in &left.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(128 + number);
    });
    Ok(())
}

impl Worker {
    /// Reads the worker's output a line at a time on a thread of its own, and hands each
    /// line, made into a report by `report`, to `lines`, until either end goes away.
    pub fn forward_lines<T: Send + 'static>(
        &mut self,
        lines: &std::sync::mpsc::Sender<T>,
        report: impl Fn(String) -> T + Send + 'static,
    ) -> Result<(), Failure> {
        let stdout = self
            .stdout
            .take()
            .ok_or("the worker's output is not piped")?;
        forward(stdout, lines, report);
        Ok(())
    }

    /// As [`Worker::forward_lines`], the lines of the worker's stderr (started by
    /// [`spawn_with_errors`]).
    pub fn forward_errors<T: Send + 'static>(
        &mut self,
        lines: &std::sync::mpsc::Sender<T>,
        report: impl Fn(String) -> T + Send + 'static,
    ) -> Result<(), Failure> {
        let stderr = self
            .stderr
            .take()
            .ok_or("the worker's stderr is not piped")?;
        forward(stderr, lines, report);
        Ok(())
    }
}

fn forward<T: Send + 'static>(
    from: impl std::io::Read + Send + 'static,
    lines: &std::sync::mpsc::Sender<T>,
    report: impl Fn(String) -> T + Send + 'static,
) {
    use std::io::BufRead;
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if lines.send(report(line)).is_err() {
                return;
            }
        }
    });
}

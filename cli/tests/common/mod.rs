//! What the CLI's test files share: running `party`, and a `shell --json` to talk to.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

pub const PARTY: &str = env!("CARGO_BIN_EXE_party");

pub fn party(args: &[&str]) -> Output {
    Command::new(PARTY).args(args).output().expect("run party")
}

/// Runs `party` with `args` and `env`, for at most 60 s (generous: the tests give it a
/// wait that would otherwise never end); kills it and fails with `stuck` past that.
pub fn party_within_a_minute(args: &[&str], env: &[(&str, &str)], stuck: &str) -> Output {
    let child = Command::new(PARTY)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run party");
    output_within_a_minute(child, stuck)
}

/// Waits for `child` to end and takes its output, for at most 60 s; kills it and fails with
/// `stuck` past that.
pub fn output_within_a_minute(child: std::process::Child, stuck: &str) -> Output {
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().expect("wait for party")));
    let Ok(output) = finished.recv_timeout(std::time::Duration::from_secs(60)) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("{stuck}");
    };
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub struct Shell {
    pub child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Shell {
    pub fn start(dir: &str) -> Shell {
        Shell::start_with(&[dir, "shell", "--json"])
    }

    pub fn start_with(args: &[&str]) -> Shell {
        let mut child = Command::new(PARTY)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Shell { child, lines }
    }

    pub fn send(&mut self, command: &str) -> serde_json::Value {
        self.send_bytes(command.as_bytes())
    }

    /// Sends one line, whatever its bytes; gives the one answer it gets.
    pub fn send_bytes(&mut self, command: &[u8]) -> serde_json::Value {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(command).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        self.answer()
    }

    /// The next answer, to a command sent before.
    pub fn answer(&mut self) -> serde_json::Value {
        let line = self.lines.next().expect("one line per command").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The trace of a run: one line per notable event, with a hash of them all, so two runs
//! of one seed can be compared by their hashes.

use std::fmt::{Arguments, Write};

#[derive(Debug)]
pub struct Trace {
    lines: Vec<String>,
    hash: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            lines: Vec::new(),
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Trace {
    /// Records one event at virtual time `at` (microseconds).
    pub fn line(&mut self, at: u64, event: Arguments<'_>) {
        let mut line = String::new();
        let _ = write!(line, "{:>9.3}ms {event}", at as f64 / 1000.0);
        // FNV-1a over every line: the same run gives the same hash on every machine.
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.lines.push(line);
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

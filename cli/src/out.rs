//! Writing to stdout and stderr: a reader that went away (`| head`) ends the command
//! quietly, never with a panic.

use std::fmt::Display;
use std::io::Write;

use crate::failure::Failure;

/// Writes one line to stdout, flushed, so that a parent reading it sees it at once.
pub fn line(text: impl Display) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(written)
}

/// What a failed write to stdout means for the command.
pub fn written(error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::stdout_closed()
    } else {
        Failure::stdout_unwritable(&error)
    }
}

/// A progress count on stderr, written over the last one; dropped if it cannot be written.
pub fn progress(text: impl Display) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r{text}").and_then(|()| stderr.flush());
}

/// A note for people on stderr (progress, warnings); one that cannot be written is dropped.
pub fn note(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

//! The leader's generation, counted in a file of the data directory: each hold of the lock
//! writes one more than the last, as its store begins to open (so a hold whose store never
//! opens counts too, and the terms leaders serve under may skip a number). Only the lock
//! holder writes it, so there is no race; it is for status displays and logs, so a file
//! that cannot be read or written costs a warning, not the leadership.

use std::path::Path;

/// Name of the generation file inside the data directory.
pub const TERM_FILE_NAME: &str = "party.term";

/// Counts one more leader of `dir`, and gives its generation.
pub(crate) fn next(dir: &Path) -> u64 {
    let path = dir.join(TERM_FILE_NAME);
    let last = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let term = last.saturating_add(1);
    if let Err(error) = crate::paths::write_atomically(&path, format!("{term}\n").as_bytes(), false)
    {
        tracing::warn!(
            "cannot count the leader's generation in {}: {error}",
            path.display()
        );
    }
    term
}

//! level-party's put.js in Rust: start any number of these and of `get`, in any order, on
//! the same directory, and everything works.
//!
//! `cargo run -p party-core --example put -- ./data` (stop with Ctrl-C)

use std::time::Duration;

use party_core::{open, Json, Options};

#[tokio::main]
async fn main() -> Result<(), party_core::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "./data".into());
    let db = open(&dir, Options::default()).await?;
    let db = db.with_codec(Json::<u64>::default());
    // Each writer starts from its own random-ish number, as in put.js.
    let mut n = u64::from(std::process::id()) % 100_000;
    loop {
        n += 1;
        db.put("a", &n).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

//! level-party's get.js in Rust: prints `a` every 250 ms, whoever wrote it.
//!
//! `cargo run -p party-core --example get -- ./data` (stop with Ctrl-C)

use std::io::Write;
use std::time::Duration;

use party_core::{open, Json, Options};

#[tokio::main]
async fn main() -> Result<(), party_core::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "./data".into());
    let db = open(&dir, Options::default()).await?;
    let db = db.with_codec(Json::<u64>::default());
    loop {
        let line = match db.get("a").await? {
            Some(a) => format!("a= {a}"),
            None => "a= (not yet)".to_owned(),
        };
        // Stop quietly when whoever reads our output goes away (`| head`).
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return db.db().close().await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

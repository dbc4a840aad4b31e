//! A blocking program: `party-blocking DIR KEY VALUE` opens DIR with a `BlockingDb`, puts
//! KEY = VALUE, closes with `close_before_exit`, prints `closed` and returns from main,
//! which drops its handle. party's warnings go to stderr; any failure is printed there
//! and exits 1.

use party_core::{BlockingDb, Options};
use tracing_subscriber::filter::LevelFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(LevelFilter::WARN)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, key, value] = &args[..] else {
        eprintln!("usage: party-blocking DIR KEY VALUE");
        return std::process::ExitCode::FAILURE;
    };
    let written = BlockingDb::open(dir, Options::default()).and_then(|db| {
        db.put(key, value)?;
        db.close_before_exit()
    });
    match written {
        Ok(()) => {
            println!("closed");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("party-blocking: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

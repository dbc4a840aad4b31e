//! Another user's program, for the two-user tests: it tries to take or reach a party socket.
//!
//! - `party-squatter listen PATH`: makes PATH's directory, open to everyone, and listens at
//!   PATH; prints `listening`, then `connection N BYTES` for every connection it accepts
//!   (N counting from 1, BYTES what arrived before the peer hung up or a second passed).
//! - `party-squatter connect PATH`: prints `connected`, or `refused KIND` with the IO error.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["listen", path] => listen(Path::new(path)),
        ["connect", path] => match UnixStream::connect(path) {
            Ok(_) => println!("connected"),
            Err(error) => println!("refused {:?}", error.kind()),
        },
        _ => {
            eprintln!("usage: party-squatter listen|connect PATH");
            std::process::exit(2);
        }
    }
}

fn listen(path: &Path) {
    let dir = path.parent().expect("a socket path has a directory");
    std::fs::create_dir_all(dir).expect("make the squatted directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .expect("open the squatted directory to everyone");
    let listener = UnixListener::bind(path).expect("bind the squatted socket");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .expect("open the squatted socket to everyone");
    println!("listening");
    for (n, stream) in listener.incoming().enumerate() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut bytes = 0;
        let mut buffer = [0u8; 4096];
        while let Ok(read @ 1..) = stream.read(&mut buffer) {
            bytes += read;
        }
        println!("connection {} {bytes}", n + 1);
    }
}

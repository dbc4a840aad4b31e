//! The floor party's own round trips are measured against: a raw local-socket ping-pong
//! with party's framing, against a child that echoes a get's reply for every request. Once
//! with both ends blocking in `read`, as party's default mode does, and once with both ends
//! spinning on a non-blocking socket for a while before they block, the floor of a
//! low-latency mode (it costs a core per end while it spins).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use party_proto::wire::{
    encode_frame, ClientMessage, FrameDecoder, ReadOp, Response, ServerMessage,
};
use party_proto::RequestId;
use serde_json::{json, Value};

use super::{first_line, key, percentile, ECHO, VALUE};
use crate::children;
use crate::failure::Failure;
use crate::out;

const CAP: u32 = 1 << 26;
/// How long a spinning end polls its socket before it blocks.
const SPIN: Duration = Duration::from_millis(1);

/// A socket end that reads either blocking, or spinning for up to [`SPIN`] first.
struct End {
    stream: UnixStream,
    spin: bool,
}

impl End {
    fn new(stream: UnixStream, spin: bool) -> std::io::Result<End> {
        stream.set_nonblocking(spin)?;
        Ok(End { stream, spin })
    }

    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if !self.spin {
            return self.stream.read(buffer);
        }
        let began = Instant::now();
        loop {
            match self.stream.read(buffer) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if began.elapsed() < SPIN {
                        std::hint::spin_loop();
                        continue;
                    }
                    self.stream.set_nonblocking(false)?;
                    let read = self.stream.read(buffer);
                    self.stream.set_nonblocking(true)?;
                    return read;
                }
                read => return read,
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The echo worker `SOCKET [spin]`: answers every request frame with a get's reply frame.
pub fn echo(args: &[String]) -> Result<ExitCode, Failure> {
    let (socket, spin) = match args {
        [socket] => (socket, false),
        [socket, spin] if spin == "spin" => (socket, true),
        _ => return Err(Failure::usage("usage: bench-echo SOCKET [spin]")),
    };
    let listener = UnixListener::bind(socket).map_err(|e| e.to_string())?;
    out::line("ready")?;
    let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut end = End::new(stream, spin).map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(CAP);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = end.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        let mut input = &buffer[..n];
        while let Some(message) = decoder
            .decode::<ClientMessage>(&mut input)
            .map_err(|e| e.to_string())?
        {
            if let ClientMessage::Read { id, .. } = message {
                let reply = ServerMessage::Reply {
                    id,
                    result: Ok(Response::Value(Some(VALUE.to_vec()))),
                };
                encode_frame(&reply, CAP, &mut out).map_err(|e| e.to_string())?;
            }
        }
        end.write_all(&out).map_err(|e| e.to_string())?;
        out.clear();
    }
}

fn request(id: u64, frame: &mut Vec<u8>) -> Result<(), String> {
    let message = ClientMessage::Read {
        id: RequestId(id),
        op: ReadOp::Get {
            key: key(id).to_vec(),
        },
    };
    encode_frame(&message, CAP, frame)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reads until `count` replies are in.
fn read_replies(
    end: &mut End,
    decoder: &mut FrameDecoder,
    buffer: &mut [u8],
    count: usize,
) -> Result<(), String> {
    let mut got = 0;
    while got < count {
        let n = end.read(buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the echo process ended".into());
        }
        let mut input = &buffer[..n];
        while decoder
            .decode::<ServerMessage>(&mut input)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            got += 1;
        }
    }
    Ok(())
}

/// Sequential round trips against an echo child, blocking or spinning: (p50 µs, p99 µs).
fn ping_pong(dir: &Path, spin: bool) -> Result<(f64, f64), Failure> {
    let socket = dir.join(if spin { "spin.sock" } else { "echo.sock" });
    let mut echo = if spin {
        children::spawn(ECHO, &[socket.as_os_str(), "spin".as_ref()])?
    } else {
        children::spawn(ECHO, &[&socket])?
    };
    if first_line(&mut echo)? != "ready" {
        return Err("the echo process did not start".into());
    }
    let stream = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
    let mut end = End::new(stream, spin).map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(CAP);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut frame = Vec::new();
    let mut times = Vec::new();
    for id in 0..20_000u64 {
        frame.clear();
        request(id, &mut frame)?;
        let began = Instant::now();
        end.write_all(&frame).map_err(|e| e.to_string())?;
        read_replies(&mut end, &mut decoder, &mut buffer, 1)?;
        times.push(began.elapsed());
    }
    times.sort();
    drop(echo);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// Messages per second with a writer thread sending all the time while this thread reads.
fn pipelined(dir: &Path) -> Result<f64, Failure> {
    let socket = dir.join("pipelined.sock");
    let mut echo = children::spawn(ECHO, &[&socket])?;
    if first_line(&mut echo)? != "ready" {
        return Err("the echo process did not start".into());
    }
    let stream = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut end = End::new(stream, false).map_err(|e| e.to_string())?;
    let total = 200_000u64;
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut batch = Vec::new();
        for id in 0..total {
            request(id, &mut batch)?;
            if batch.len() > 16 * 1024 {
                writer.write_all(&batch).map_err(|e| e.to_string())?;
                batch.clear();
            }
        }
        writer.write_all(&batch).map_err(|e| e.to_string())
    });
    let mut buffer = vec![0u8; 64 * 1024];
    read_replies(
        &mut end,
        &mut FrameDecoder::new(CAP),
        &mut buffer,
        total as usize,
    )?;
    sender.join().map_err(|_| "sender panicked")??;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub(super) fn socket_baseline(dir: &Path) -> Result<Value, Failure> {
    let (p50, p99) = ping_pong(dir, false)?;
    let (spin_p50, spin_p99) = ping_pong(dir, true)?;
    Ok(json!({
        "rtt_p50_us": p50,
        "rtt_p99_us": p99,
        "spinning_rtt_p50_us": spin_p50,
        "spinning_rtt_p99_us": spin_p99,
        "pipelined_msgs_per_s": pipelined(dir)?,
    }))
}

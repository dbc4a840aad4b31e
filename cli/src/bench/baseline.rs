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
    encode_frame, ClientMessage, FrameDecoder, ReadOp, Response, ServerMessage, WriteOp,
};
use party_proto::{RequestId, WriteSeq};
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

/// The echo worker `SOCKET [spin | value BYTES]`: answers every read with a get's reply
/// (of [`VALUE`], or of BYTES bytes), and every write as written.
pub fn echo(args: &[String]) -> Result<ExitCode, Failure> {
    let usage = || Failure::usage("usage: bench-echo SOCKET [spin | value BYTES]");
    let (socket, spin, value) = match args {
        [socket] => (socket, false, VALUE.to_vec()),
        [socket, spin] if spin == "spin" => (socket, true, VALUE.to_vec()),
        [socket, value, bytes] if value == "value" => {
            let bytes = bytes.parse().map_err(|_| usage())?;
            (socket, false, vec![b'v'; bytes])
        }
        _ => return Err(usage()),
    };
    let listener = UnixListener::bind(socket).map_err(|e| e.to_string())?;
    out::line("ready")?;
    let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
    let end = End::new(stream, spin).map_err(|e| e.to_string())?;
    serve(end, value)?;
    Ok(ExitCode::SUCCESS)
}

/// The echo's part: answers what comes on `end` until its other end closes.
fn serve(mut end: End, value: Vec<u8>) -> Result<(), String> {
    let mut decoder = FrameDecoder::new(CAP);
    let mut buffer = vec![0u8; 64 * 1024];
    // Each reply encoded once: the floor of what a leader's part of the exchange costs.
    let reply = |result| -> Result<Vec<u8>, String> {
        let mut frame = Vec::new();
        let reply = ServerMessage::Reply {
            id: RequestId(0),
            result: Ok(result),
        };
        encode_frame(&reply, CAP, &mut frame).map_err(|e| e.to_string())?;
        Ok(frame)
    };
    let (read_reply, write_reply) = (
        reply(Response::Value(Some(value.into())))?,
        reply(Response::Written)?,
    );
    let mut out = Vec::new();
    loop {
        let n = end.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        let mut input = &buffer[..n];
        while let Some(message) = decoder
            .decode::<ClientMessage>(&mut input)
            .map_err(|e| e.to_string())?
        {
            match message {
                ClientMessage::Read { .. } => out.extend_from_slice(&read_reply),
                ClientMessage::Write { .. } => out.extend_from_slice(&write_reply),
                _ => {}
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
        got += read_once(end, decoder, buffer)?;
    }
    Ok(())
}

/// Reads once: how many replies that completed.
fn read_once(
    end: &mut End,
    decoder: &mut FrameDecoder,
    buffer: &mut [u8],
) -> Result<usize, String> {
    let n = end.read(buffer).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the echo process ended".into());
    }
    let mut input = &buffer[..n];
    let mut got = 0;
    while decoder
        .decode::<ServerMessage>(&mut input)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        got += 1;
    }
    Ok(got)
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

/// Requests of `frame` kept `depth` in flight against an echo child for `span`: answers per
/// second. Every request in flight is answered before it returns.
fn kept_in_flight(
    end: &mut End,
    frame: &[u8],
    depth: usize,
    span: Duration,
) -> Result<f64, String> {
    let mut decoder = FrameDecoder::new(CAP);
    let mut buffer = vec![0u8; 64 * 1024];
    for _ in 0..depth {
        end.write_all(frame).map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let mut answered = 0u64;
    while start.elapsed() < span {
        // One new request for each one answered.
        for _ in 0..read_once(end, &mut decoder, &mut buffer)? {
            answered += 1;
            end.write_all(frame).map_err(|e| e.to_string())?;
        }
    }
    // The last requests' answers count too, as the bench's pipelines through party count
    // theirs: a span that ends before the first answer (a short one on a loaded machine)
    // still gives a rate, not 0 and a ratio of infinity over it.
    read_replies(end, &mut decoder, &mut buffer, depth)?;
    answered += depth as u64;
    Ok(answered as f64 / start.elapsed().as_secs_f64())
}

/// The ceiling of the big values bench: MB/s of puts and gets of each of `sizes` through a
/// raw local socket, 16 in flight, against an echo child that answers them with frames
/// encoded once. Each end decodes what it receives as party's do; what party adds on top
/// is the encoding of each frame, its session and the store.
pub(super) fn big_values_ceiling(
    dir: &Path,
    sizes: &[usize],
    span: Duration,
) -> Result<Value, Failure> {
    let mut report = serde_json::Map::new();
    for &size in sizes {
        let socket = dir.join(format!("values-{size}.sock"));
        let bytes = size.to_string();
        let mut echo = children::spawn(
            ECHO,
            &[socket.as_os_str(), "value".as_ref(), bytes.as_ref()],
        )?;
        if first_line(&mut echo)? != "ready" {
            return Err("the echo process did not start".into());
        }
        let stream = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
        let mut end = End::new(stream, false).map_err(|e| e.to_string())?;
        let key = b"big/00".to_vec();
        let mut put = Vec::new();
        let op = WriteOp::Put {
            key: key.clone(),
            value: vec![b'b'; size],
        };
        let write = ClientMessage::Write {
            id: RequestId(0),
            seq: WriteSeq(0),
            oldest_pending: WriteSeq(0),
            first_sent_ms: 0,
            op: op.into(),
        };
        encode_frame(&write, CAP, &mut put).map_err(|e| e.to_string())?;
        let mut get = Vec::new();
        let read = ClientMessage::Read {
            id: RequestId(0),
            op: ReadOp::Get { key },
        };
        encode_frame(&read, CAP, &mut get).map_err(|e| e.to_string())?;
        let megabytes = |ops: f64| ops * size as f64 / 1e6;
        let puts = kept_in_flight(&mut end, &put, 16, span)?;
        let gets = kept_in_flight(&mut end, &get, 16, span)?;
        report.insert(
            size.to_string(),
            json!({"put_mb_per_s": megabytes(puts), "get_mb_per_s": megabytes(gets)}),
        );
        drop(echo);
    }
    Ok(Value::Object(report))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_over_before_the_first_answer_still_gives_a_rate() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let echo = std::thread::spawn(move || {
            serve(End::new(theirs, false).unwrap(), vec![b'v'; 1 << 20])
        });
        let mut end = End::new(ours, false).unwrap();
        let mut get = Vec::new();
        request(0, &mut get).unwrap();
        let rate = kept_in_flight(&mut end, &get, 16, Duration::ZERO).unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{rate}");
        drop(end);
        echo.join().unwrap().unwrap();
    }
}

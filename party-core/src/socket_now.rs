//! A connection's socket read or written at once, behind tokio's back (on Linux and the
//! other Unix systems with `MSG_NOSIGNAL`), where waiting for
//! tokio to learn the socket's readiness would cost a wake-up: a spinning wait for the
//! other end, and a write to a connection tokio has not yet seen writable (every new one:
//! its first write would otherwise wait for a turn of the I/O driver, and a follower's
//! hello for a writer task of its own). And every write, at once or waiting, with
//! `MSG_NOSIGNAL` where there is one (see [`without_signal`]).
//!
//! Tokio's readiness model allows it: tokio only learns "nothing to read" or "full" from a
//! call of its own, and a change after that raises a new event.

use interprocess::local_socket::tokio::Stream;
use party_proto::wire::Outgoing;

/// Reads what `stream` holds now into `buffer`'s spare capacity, without waiting: `None`
/// when nothing has arrived, `Some(Ok(0))` at the end of the connection.
#[cfg(unix)]
pub(crate) fn recv_now(stream: &Stream, buffer: &mut Vec<u8>) -> Option<std::io::Result<usize>> {
    use rustix::net::{recv, RecvFlags};
    use std::os::fd::AsFd;

    let Stream::UdSocket(socket) = stream;
    match recv(
        socket.as_fd(),
        rustix::buffer::spare_capacity(buffer),
        RecvFlags::DONTWAIT,
    ) {
        Ok((read, _)) => Some(Ok(read)),
        Err(rustix::io::Errno::AGAIN) => None,
        Err(rustix::io::Errno::INTR) => None,
        Err(error) => Some(Err(error.into())),
    }
}

/// Elsewhere the mode does nothing: every wait parks at once.
#[cfg(not(unix))]
pub(crate) fn recv_now(_: &Stream, _: &mut Vec<u8>) -> Option<std::io::Result<usize>> {
    None
}

/// The stream to write slices to: interprocess's `Stream` forwards only `poll_write`, so
/// that a vectored write through it takes the first slice alone; its Unix-domain socket
/// takes them all in one call.
#[cfg(unix)]
pub(crate) fn gathering(
    stream: &Stream,
) -> &interprocess::os::unix::uds_local_socket::tokio::Stream {
    let Stream::UdSocket(socket) = stream;
    socket
}

#[cfg(not(unix))]
pub(crate) fn gathering(stream: &Stream) -> &Stream {
    stream
}

/// Slices handed to the socket in one write, at most.
pub(crate) const MAX_SLICES: usize = 32;

#[cfg(all(
    unix,
    not(any(target_vendor = "apple", target_os = "redox", target_os = "vita"))
))]
pub(crate) use without_signal::{send_now, write_rest};

#[cfg(not(all(
    unix,
    not(any(target_vendor = "apple", target_os = "redox", target_os = "vita"))
)))]
pub(crate) use through_tokio::{send_now, write_rest};

/// Sends with `MSG_NOSIGNAL`: a follower gone mid-answer is an error of its connection
/// alone, not a SIGPIPE, which kills a process that has restored the signal's default (a C
/// program embedding party, or a Rust one that wants `| head` to end it quietly). Tokio's
/// own writes to a Unix socket use `write(2)`, which raises it.
#[cfg(all(
    unix,
    not(any(target_vendor = "apple", target_os = "redox", target_os = "vita"))
))]
mod without_signal {
    use super::{gathering, Outgoing, Stream, MAX_SLICES};
    use std::io::IoSlice;

    /// Writes what `stream` takes of `out` from byte `from` on now, without waiting: how
    /// many bytes it took (none when it is full, or failed: a write that waits meets the
    /// error then).
    pub(crate) fn send_now(stream: &Stream, out: &Outgoing, from: usize) -> usize {
        let mut sent = from;
        while sent < out.len() {
            match send_once(stream, out, sent) {
                Err(rustix::io::Errno::INTR) => {}
                Ok(0) | Err(_) => break,
                Ok(n) => sent += n,
            }
        }
        sent - from
    }

    /// Writes `out` from byte `from` on, waiting for the socket as long as it takes: a
    /// send each time tokio has seen it writable.
    pub(crate) async fn write_rest(
        stream: &Stream,
        out: &Outgoing,
        mut from: usize,
    ) -> std::io::Result<()> {
        let socket = gathering(stream).inner();
        while from < out.len() {
            let send = || loop {
                match send_once(stream, out, from) {
                    Err(rustix::io::Errno::INTR) => {}
                    sent => return sent.map_err(std::io::Error::from),
                }
            };
            match socket.async_io(tokio::io::Interest::WRITABLE, send).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                written => from += written,
            }
        }
        Ok(())
    }

    /// One send of what `stream` takes of `out` from byte `from` on, without waiting.
    fn send_once(stream: &Stream, out: &Outgoing, from: usize) -> rustix::io::Result<usize> {
        use rustix::net::{send, sendmsg, SendAncillaryBuffer, SendFlags};
        use std::os::fd::AsFd;

        let Stream::UdSocket(socket) = stream;
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        match out.slices(from, &mut slices) {
            // The usual case, a run of small frames: the plainer call.
            1 => send(socket.as_fd(), &slices[0], flags),
            filled => sendmsg(
                socket.as_fd(),
                &slices[..filled],
                &mut SendAncillaryBuffer::default(),
                flags,
            ),
        }
    }
}

/// Elsewhere (no `MSG_NOSIGNAL` on Apple's systems; Windows' pipes) through tokio, which
/// writes only once it has seen the stream writable.
#[cfg(not(all(
    unix,
    not(any(target_vendor = "apple", target_os = "redox", target_os = "vita"))
)))]
mod through_tokio {
    use super::{gathering, Outgoing, Stream, MAX_SLICES};
    use std::io::IoSlice;

    /// Writes what `stream` takes of `out` from byte `from` on now, without waiting: how
    /// many bytes it took.
    pub(crate) fn send_now(stream: &Stream, out: &Outgoing, from: usize) -> usize {
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};
        use tokio::io::AsyncWrite;

        let mut stream = gathering(stream);
        let mut context = Context::from_waker(Waker::noop());
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut sent = from;
        while sent < out.len() {
            let filled = out.slices(sent, &mut slices);
            match Pin::new(&mut stream).poll_write_vectored(&mut context, &slices[..filled]) {
                Poll::Ready(Ok(n)) if n > 0 => sent += n,
                _ => break,
            }
        }
        sent - from
    }

    /// Writes `out` from byte `from` on, waiting for the socket as long as it takes.
    pub(crate) async fn write_rest(
        stream: &Stream,
        out: &Outgoing,
        mut from: usize,
    ) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;

        let mut send = gathering(stream);
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        while from < out.len() {
            let filled = out.slices(from, &mut slices);
            match send.write_vectored(&slices[..filled]).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                written => from += written,
            }
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use party_proto::wire::{encode_frame, Response, ServerMessage, DEFAULT_MAX_FRAME_LEN};
    use party_proto::RequestId;
    use std::io::{IoSlice, Read};
    use std::os::fd::OwnedFd;
    use tokio::io::AsyncWriteExt;

    /// A connected socket as a connection holds it, and its other end. Needs a runtime.
    pub(crate) fn socket_pair() -> (Stream, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let ours =
            interprocess::os::unix::uds_local_socket::tokio::Stream::try_from(OwnedFd::from(ours))
                .unwrap();
        (Stream::from(ours), theirs)
    }

    #[tokio::test]
    async fn a_vectored_write_takes_every_slice() {
        let (stream, _peer) = socket_pair();
        let pieces: [&[u8]; 3] = [b"head", b"lent value", b"tail"];
        let slices = pieces.map(IoSlice::new);
        let written = gathering(&stream).write_vectored(&slices).await.unwrap();
        assert_eq!(written, pieces.iter().map(|p| p.len()).sum::<usize>());
        // Why `gathering` exists; once interprocess forwards vectored writes, it can go.
        let written = (&stream).write_vectored(&slices).await.unwrap();
        assert_eq!(
            written,
            pieces[0].len(),
            "the enum writes the first slice alone"
        );
    }

    /// Frames that lend more values than one write takes slices for go out whole while the
    /// socket has room: the rest is written at once, not left to a write that waits.
    #[tokio::test]
    async fn everything_the_socket_has_room_for_is_sent_now_whatever_the_slices() {
        let (stream, mut peer) = socket_pair();
        // Each answer's value lent: two slices a frame, more than MAX_SLICES in all, and
        // frames of different lengths.
        let mut out = Outgoing::lending_from(1);
        let mut whole = Vec::new();
        for id in 0..MAX_SLICES as u64 {
            let answer = ServerMessage::Reply {
                id: RequestId(id),
                result: Ok(Response::Value(Some(
                    vec![id as u8; 100 + id as usize].into(),
                ))),
            };
            out.push_server(&answer, DEFAULT_MAX_FRAME_LEN).unwrap();
            encode_frame(&answer, DEFAULT_MAX_FRAME_LEN, &mut whole).unwrap();
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(
            out.slices(0, &mut slices),
            MAX_SLICES,
            "more than one write takes"
        );
        assert_eq!(send_now(&stream, &out, 0), out.len());
        let mut received = vec![0; whole.len()];
        peer.read_exact(&mut received).unwrap();
        assert!(received == whole, "the bytes of the frames, in order");
    }

    /// What the socket did not take of a turn at once is written whole, from where it
    /// stopped taking it, however many writes that takes.
    #[tokio::test]
    async fn the_rest_of_a_turn_is_written_whole_however_many_writes_it_takes() {
        let (stream, mut peer) = socket_pair();
        rustix::net::sockopt::set_socket_send_buffer_size(gathering(&stream), 16 * 1024).unwrap();
        // Answers to gets of big values, lent, and a small answer after them.
        let mut out = Outgoing::default();
        let mut whole = Vec::new();
        let answers = (0..4u8)
            .map(|i| Response::Value(Some(vec![i; 256 * 1024].into())))
            .chain([Response::Written]);
        for (id, response) in (0..).zip(answers) {
            let answer = ServerMessage::Reply {
                id: RequestId(id),
                result: Ok(response),
            };
            out.push_server(&answer, DEFAULT_MAX_FRAME_LEN).unwrap();
            encode_frame(&answer, DEFAULT_MAX_FRAME_LEN, &mut whole).unwrap();
        }
        // Nobody reads yet: the socket takes what its buffer holds.
        let sent = send_now(&stream, &out, 0);
        assert!(sent < out.len() / 4, "{sent} bytes taken at once");
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            peer.read_to_end(&mut received).unwrap();
            received
        });
        write_rest(&stream, &out, sent).await.unwrap();
        drop(stream);
        let received = reader.join().unwrap();
        assert_eq!(received.len(), whole.len());
        assert!(received == whole, "the bytes of the frames, in order");
    }
}

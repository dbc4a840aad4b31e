//! A connection's socket read or written at once, behind tokio's back (on Linux and the
//! other Unix systems with `MSG_NOSIGNAL`), where waiting for
//! tokio to learn the socket's readiness would cost a wake-up: a spinning wait for the
//! other end, and a write to a connection tokio has not yet seen writable (every new one:
//! its first write would otherwise wait for a turn of the I/O driver, and a follower's
//! hello for a writer task of its own).
//!
//! Tokio's readiness model allows it: tokio only learns "nothing to read" or "full" from a
//! call of its own, and a change after that raises a new event.

use interprocess::local_socket::tokio::Stream;

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

/// Writes what `stream` takes of `bytes` now, without waiting: how many it took (none when
/// it is full, or failed: a write that waits meets the error then).
#[cfg(all(
    unix,
    not(any(target_vendor = "apple", target_os = "redox", target_os = "vita"))
))]
pub(crate) fn send_now(stream: &Stream, bytes: &[u8]) -> usize {
    use rustix::net::{send, SendFlags};
    use std::os::fd::AsFd;

    let Stream::UdSocket(socket) = stream;
    let mut sent = 0;
    while sent < bytes.len() {
        match send(
            socket.as_fd(),
            &bytes[sent..],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    sent
}

/// Elsewhere (no `MSG_NOSIGNAL` on Apple's systems; Windows' pipes) through tokio, which
/// writes only once it has seen the stream writable.
#[cfg(not(all(
    unix,
    not(any(target_vendor = "apple", target_os = "redox", target_os = "vita"))
)))]
pub(crate) fn send_now(mut stream: &Stream, bytes: &[u8]) -> usize {
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::AsyncWrite;

    let mut context = Context::from_waker(Waker::noop());
    let mut sent = 0;
    while sent < bytes.len() {
        match Pin::new(&mut stream).poll_write(&mut context, &bytes[sent..]) {
            Poll::Ready(Ok(n)) if n > 0 => sent += n,
            _ => break,
        }
    }
    sent
}

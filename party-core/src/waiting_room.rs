//! The waiting room: how the processes that lost the race for the lock learn that the
//! winner serves, without polling (see party-proto's election for when each step happens).
//!
//! The winner binds a second Unix socket beside the leader's, `<socket>.room`, as soon as it
//! holds the lock, and accepts nothing on it while its store opens. A process that finds
//! nobody listening on the leader's socket connects to the room and says hello there, as
//! to a leader: its connection waits in the room's queue, the hello unread. Once the winner
//! serves, it takes every connection queued in the room as a follower connection (each
//! answered as one accepted on the leader's socket), then closes the room; if it gives up,
//! or dies, the kernel ends every waiting connection at once, and those waiting run for
//! the lock again. Not on Windows, whose named pipes queue no connection unaccepted: there
//! nobody finds a room, and the election backs off as it did before rooms.

use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::Stream;

use crate::link::Link;

/// The room of the process holding the lock. Dropping it closes it.
#[derive(Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) struct Room {
    #[cfg(unix)]
    listener: std::os::unix::net::UnixListener,
    /// Its name, until removed.
    path: Option<PathBuf>,
}

/// Where the room of the leader's socket `socket` is.
fn room_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".room");
    PathBuf::from(name)
}

impl Room {
    /// Opens the room beside `socket`, replacing one a dead holder left (only the lock
    /// holder calls this). `None` when it cannot be bound (a path too long for a socket,
    /// say): the others then back off as they would without rooms.
    pub fn open(socket: &Path) -> Option<Room> {
        let path = room_path(socket);
        #[cfg(unix)]
        {
            let _ = std::fs::remove_file(&path);
            let bound = std::os::unix::net::UnixListener::bind(&path)
                .and_then(|listener| crate::paths::owner_only(&path).map(|()| listener))
                .and_then(|listener| listener.set_nonblocking(true).map(|()| listener));
            match bound {
                Ok(listener) => Some(Room {
                    listener,
                    path: Some(path),
                }),
                Err(error) => {
                    tracing::debug!("no waiting room at {}: {error}", path.display());
                    None
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }

    /// Takes every connection waiting in the room, to be served as followers (on the
    /// runtime this is called on). Those that come later are ended when the room closes,
    /// and find the leader's socket.
    pub fn take_seats(&self) -> Vec<Stream> {
        #[cfg(unix)]
        {
            std::iter::from_fn(|| self.take_seat()).collect()
        }
        #[cfg(not(unix))]
        Vec::new()
    }

    /// The next connection waiting in the room, if any.
    #[cfg(unix)]
    fn take_seat(&self) -> Option<Stream> {
        let stream = self.listener.accept().and_then(|(stream, _)| {
            stream.set_nonblocking(true)?;
            let fd = std::os::fd::OwnedFd::from(stream);
            interprocess::os::unix::uds_local_socket::tokio::Stream::try_from(fd)
        });
        match stream {
            Ok(stream) => Some(Stream::from(stream)),
            Err(error) => {
                // One that cannot be taken (out of descriptors, say) ends with the room.
                if error.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!("a seat in the waiting room not taken: {error}");
                }
                None
            }
        }
    }

    /// Removes the room's name, so that nobody else enters; those in it wait on until it
    /// is dropped. Only while this process holds the lock: after, the name may be the next
    /// holder's.
    pub fn unlink(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        // The name goes first, so that a late comer finds no room rather than one closing.
        self.unlink();
    }
}

/// Sits down in the room beside `socket`: a connection to its holder, on which the hello
/// is said as to a leader. `None` when there is no room open.
pub(crate) async fn enter(
    socket: &Path,
    max_frame_len: u32,
    spin: Option<std::time::Duration>,
    keep_reads: bool,
) -> Option<Link> {
    #[cfg(unix)]
    {
        Link::connect(&room_path(socket), max_frame_len, spin, keep_reads)
            .await
            .ok()
    }
    #[cfg(not(unix))]
    {
        let _ = (socket, max_frame_len, spin, keep_reads);
        None
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::future::Future;

    use party_proto::wire::{
        encode_frame, ClientMessage, LeaveCause, Outgoing, ServerMessage, DEFAULT_MAX_FRAME_LEN,
    };
    use party_proto::IterId;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn enter(socket: &Path) -> Option<Link> {
        super::enter(socket, DEFAULT_MAX_FRAME_LEN, None, false).await
    }

    /// Whether the seat's connection is still waiting (nothing came, it did not end).
    async fn waits(seat: &mut Link) -> bool {
        let mut receiving = std::pin::pin!(seat.receive(false));
        std::future::poll_fn(|cx| std::task::Poll::Ready(receiving.as_mut().poll(cx).is_pending()))
            .await
    }

    #[tokio::test]
    async fn a_holder_that_serves_takes_every_seat_with_what_was_said_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("party.sock");
        assert!(enter(&socket).await.is_none(), "no room yet");
        // A room file left by a holder that died is replaced, and is no room meanwhile.
        drop(std::os::unix::net::UnixListener::bind(room_path(&socket)).unwrap());
        assert!(room_path(&socket).exists());
        assert!(enter(&socket).await.is_none(), "a dead holder's room");
        let room = Room::open(&socket).expect("the lock holder opens its room");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(room_path(&socket)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "owner-only, as the leader's socket");
        assert!(room.take_seats().is_empty(), "nobody waits yet");
        // Any message stands for a hello: the room carries frames, whatever they say.
        let hello = |iter| ClientMessage::IterClose { iter: IterId(iter) };
        let mut seats = Vec::new();
        for said in [hello(1), hello(2)] {
            let mut seat = enter(&socket).await.expect("an open room");
            let mut frames = Outgoing::default();
            frames.push_client(&said, DEFAULT_MAX_FRAME_LEN).unwrap();
            seat.send(&mut frames);
            assert!(
                waits(&mut seat).await,
                "a seat waits while the room is open"
            );
            seats.push(seat);
        }
        let taken = room.take_seats();
        assert_eq!(taken.len(), 2, "every seat, in one go");
        assert!(room.take_seats().is_empty(), "and each once");
        let mut answer = Vec::new();
        let leaving = ServerMessage::Leaving(LeaveCause::Closing);
        encode_frame(&leaving, DEFAULT_MAX_FRAME_LEN, &mut answer).unwrap();
        for (taken, (seat, iter)) in taken.iter().zip(seats.iter_mut().zip([1, 2])) {
            let mut frame = Vec::new();
            encode_frame(&hello(iter), DEFAULT_MAX_FRAME_LEN, &mut frame).unwrap();
            let mut said = vec![0; frame.len()];
            (&mut &*taken).read_exact(&mut said).await.unwrap();
            assert_eq!(said, frame, "the hello said in the room is read");
            (&mut &*taken).write_all(&answer).await.unwrap();
            let received = seat.receive(false).await;
            assert_eq!(received.messages, std::slice::from_ref(&leaving));
            assert!(received.end.is_none());
        }
        // Taken seats outlive the room: they are follower connections now.
        drop(room);
        for seat in &mut seats {
            assert!(waits(seat).await, "a taken seat is not ended with the room");
        }
        drop(taken);
        for seat in &mut seats {
            assert!(seat.receive(false).await.end.is_some());
        }
    }

    #[tokio::test]
    async fn a_room_closed_unserved_ends_every_seat_and_nobody_finds_a_closed_one() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("party.sock");
        let mut room = Room::open(&socket).expect("the lock holder opens its room");
        let mut seats = Vec::new();
        for _ in 0..3 {
            seats.push(enter(&socket).await.expect("an open room"));
        }
        room.unlink();
        assert!(!room_path(&socket).exists(), "its name goes first");
        assert!(enter(&socket).await.is_none(), "nobody enters after");
        assert!(waits(&mut seats[0]).await, "those in it wait on");
        drop(room);
        for seat in &mut seats {
            let received = seat.receive(false).await;
            assert!(received.messages.is_empty());
            assert!(received.end.is_some(), "told at once, every one");
        }
        assert!(enter(&socket).await.is_none(), "a closed room");
    }

    #[test]
    fn a_room_that_cannot_be_bound_is_no_room() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(200)).join("party.sock");
        assert!(Room::open(&long).is_none());
    }
}

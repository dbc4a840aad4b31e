//! The waiting room: how the processes that lost the race for the lock learn that the
//! winner serves, without polling (see party-proto's election for when each step happens).
//!
//! The winner binds a second Unix socket beside the leader's, `<socket>.room`, as soon as it
//! holds the lock, and never accepts on it. A process that finds nobody listening on the
//! leader's socket connects to the room and waits for the connection to end: the kernel
//! ends every waiting connection at once when the winner closes the room, once it serves, or
//! gives up, or dies. Not on Windows, whose named pipes queue no connection unaccepted:
//! there nobody finds a room, and the election backs off as it did before rooms.

use std::path::{Path, PathBuf};

/// The room of the process holding the lock. Dropping it closes it.
#[derive(Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) struct Room {
    #[cfg(unix)]
    _listener: std::os::unix::net::UnixListener,
    /// Its name, until removed.
    path: Option<PathBuf>,
}

/// A connection waiting in another process's room.
#[derive(Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) struct Seat {
    #[cfg(unix)]
    stream: tokio::net::UnixStream,
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
                .and_then(|listener| crate::paths::owner_only(&path).map(|()| listener));
            match bound {
                Ok(listener) => Some(Room {
                    _listener: listener,
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
}

impl Room {
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

impl Seat {
    /// Enters the room beside `socket`; `None` when there is none open.
    pub async fn enter(socket: &Path) -> Option<Seat> {
        #[cfg(unix)]
        {
            let stream = tokio::net::UnixStream::connect(room_path(socket)).await;
            stream.ok().map(|stream| Seat { stream })
        }
        #[cfg(not(unix))]
        {
            let _ = socket;
            None
        }
    }

    /// Whether the room has closed already, without waiting.
    pub fn closed_now(&self) -> bool {
        #[cfg(unix)]
        {
            // The holder never writes: anything but "nothing yet" is the end.
            match self.stream.try_read(&mut [0u8; 1]) {
                Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
                Ok(_) => true,
            }
        }
        #[cfg(not(unix))]
        false
    }

    /// Waits until the room closes. Cancel-safe.
    pub async fn closed(&mut self) {
        #[cfg(unix)]
        {
            // The holder never writes: the read ends with the connection.
            let _ = tokio::io::AsyncReadExt::read(&mut self.stream, &mut [0u8; 1]).await;
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::future::Future;

    use super::*;

    #[tokio::test]
    async fn everyone_in_the_room_is_told_when_it_closes_and_nobody_finds_a_closed_one() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("party.sock");
        assert!(Seat::enter(&socket).await.is_none(), "no room yet");
        // A room file left by a holder that died is replaced, and is no room meanwhile.
        drop(std::os::unix::net::UnixListener::bind(room_path(&socket)).unwrap());
        assert!(room_path(&socket).exists());
        assert!(Seat::enter(&socket).await.is_none(), "a dead holder's room");
        let room = Room::open(&socket).expect("the lock holder opens its room");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(room_path(&socket)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "owner-only, as the leader's socket");
        let mut seats = Vec::new();
        for _ in 0..3 {
            seats.push(Seat::enter(&socket).await.expect("an open room"));
        }
        let mut first = seats.pop().unwrap();
        assert!(!first.closed_now());
        {
            let mut waiting = std::pin::pin!(first.closed());
            let pending = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(waiting.as_mut().poll(cx).is_pending())
            });
            assert!(pending.await, "a seat waits while the room is open");
        }
        let mut room = room;
        room.unlink();
        assert!(!room_path(&socket).exists(), "its name goes first");
        assert!(Seat::enter(&socket).await.is_none(), "nobody enters after");
        assert!(!first.closed_now(), "those in it wait on");
        drop(room);
        first.closed().await;
        assert!(first.closed_now());
        for mut seat in seats {
            seat.closed().await;
        }
        assert!(Seat::enter(&socket).await.is_none(), "a closed room");
    }

    #[test]
    fn a_room_that_cannot_be_bound_is_no_room() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(200)).join("party.sock");
        assert!(Room::open(&long).is_none());
    }
}

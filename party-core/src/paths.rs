//! Where a party keeps its files: everything in the data directory, except a socket whose
//! path would be too long for a Unix socket.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::options::Options;

/// The longest socket path used as is. Unix allows 107 bytes in `sun_path`; a margin keeps
/// clear of platforms with less.
const MAX_SOCKET_PATH: usize = 100;

/// The files of one data directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub dir: PathBuf,
    pub store: PathBuf,
    pub socket: PathBuf,
}

impl Layout {
    /// Creates the data directory if needed and lays out its files.
    pub fn new(dir: &Path, options: &Options) -> Result<Layout, Error> {
        let io = |context, source| Error::Io {
            context,
            path: dir.to_owned(),
            source,
        };
        if dir.exists() && !dir.is_dir() {
            let not_a_dir = std::io::Error::from(std::io::ErrorKind::NotADirectory);
            return Err(io("cannot use as the data directory", not_a_dir));
        }
        create_private_dir(dir).map_err(|e| io("cannot create the data directory", e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| io("cannot resolve the data directory", e))?;
        let socket = match &options.socket_path {
            Some(path) => path.clone(),
            None => default_socket(&dir)
                .map_err(|e| io("cannot make a private place for the socket of", e))?,
        };
        Ok(Layout {
            store: crate::store_dir::store_path(&dir, options.backend),
            socket,
            dir,
        })
    }
}

/// On Windows: the named pipe `\\.\pipe\party\<absolute dir>`, without the `\\?\`
/// prefix that `canonicalize` puts on Windows paths.
#[cfg(windows)]
fn default_socket(dir: &Path) -> std::io::Result<PathBuf> {
    let dir = dir.display().to_string();
    let dir = dir.strip_prefix(r"\\?\").unwrap_or(&dir);
    Ok(PathBuf::from(format!(r"\\.\pipe\party\{dir}")))
}

/// `<dir>/party.sock`, or for a deep directory `<private>/<hash of dir>.sock` in this user's
/// private socket directory (see [`private_socket_dir`]): every process of the directory
/// derives the same name from the canonical path, without anything to record or any
/// environment variable that could differ between them.
#[cfg(not(windows))]
fn default_socket(dir: &Path) -> std::io::Result<PathBuf> {
    let socket = dir.join("party.sock");
    if socket.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(socket);
    }
    let private = private_socket_dir(Path::new("/tmp"), rustix::process::geteuid().as_raw())?;
    Ok(private.join(format!(
        "{:016x}.sock",
        fnv1a(dir.as_os_str().as_encoded_bytes())
    )))
}

/// Names tried for a user's private socket directory before giving up.
#[cfg(not(windows))]
const PRIVATE_DIR_NAMES: u32 = 16;

/// The first of `<base>/party-<uid>-0`, `-1`, … that is this user's alone (a directory, not
/// a link, owned by `uid`, closed to everyone else), created if missing. In a
/// world-writable `/tmp` another user could create or bind a name first: such a name is
/// skipped, so that user can neither block the socket nor be reached by a follower, and
/// every process of `uid` still settles on the same directory.
#[cfg(not(windows))]
fn private_socket_dir(base: &Path, uid: u32) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    for n in 0..PRIVATE_DIR_NAMES {
        let path = base.join(format!("party-{uid}-{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let found = std::fs::symlink_metadata(&path)?;
        if found.is_dir() && found.uid() == uid && found.mode() & 0o077 == 0 {
            return Ok(path);
        }
    }
    Err(std::io::Error::other(format!(
        "every private socket directory name in {} is taken by someone else",
        base.display()
    )))
}

/// FNV-1a, 64 bit: stable across Rust versions, unlike std's `DefaultHasher`.
#[cfg(not(windows))]
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    #[test]
    fn short_dirs_keep_the_socket_inside_deep_ones_get_a_stable_short_path() {
        let short = Path::new("/data/app");
        assert_eq!(
            default_socket(short).unwrap(),
            Path::new("/data/app/party.sock")
        );
        let deep = PathBuf::from(format!("/data/{}", "d/".repeat(60)));
        let socket = default_socket(&deep).unwrap();
        assert!(socket.as_os_str().len() <= MAX_SOCKET_PATH, "{socket:?}");
        assert_eq!(
            socket,
            default_socket(&deep).unwrap(),
            "every process derives the same path"
        );
        assert_ne!(socket, default_socket(&deep.join("other")).unwrap());
        // Two stores of one name in different places: a follower of one must never reach
        // the other's leader.
        assert_ne!(
            default_socket(&deep.join("a/db")).unwrap(),
            default_socket(&deep.join("b/db")).unwrap()
        );
    }

    /// Names another user could have planted in a shared `/tmp` are skipped: one open to
    /// its group, one open to others, a link, a file, one owned by someone else.
    #[test]
    fn the_private_socket_directory_skips_what_is_not_this_users_alone() {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let uid = rustix::process::geteuid().as_raw();
        let name = |n: u32| base.join(format!("party-{uid}-{n}"));
        for (n, mode) in [(0, 0o750), (1, 0o705)] {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(name(n))
                .unwrap();
            std::fs::set_permissions(name(n), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // A link to a directory that would pass: only the link itself is judged.
        let closed = base.join("closed");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&closed)
            .unwrap();
        std::os::unix::fs::symlink(&closed, name(2)).unwrap();
        std::fs::write(name(3), b"").unwrap();
        let mut first_free = 4;
        if std::os::unix::fs::chown(base, Some(uid), None).is_ok() && uid == 0 {
            // As root, also a directory of another user (nobody), closed like ours.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(name(4))
                .unwrap();
            std::os::unix::fs::chown(name(4), Some(65534), None).unwrap();
            first_free = 5;
        }
        let private = private_socket_dir(base, uid).unwrap();
        assert_eq!(private, name(first_free));
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            private_socket_dir(base, uid).unwrap(),
            private,
            "found again"
        );
        for n in first_free + 1..PRIVATE_DIR_NAMES {
            std::fs::write(name(n), b"").unwrap();
        }
        std::fs::remove_dir(&private).unwrap();
        std::fs::write(&private, b"").unwrap();
        assert!(private_socket_dir(base, uid).is_err(), "every name taken");
    }
}

/// Restricts the file (a socket) at `path` to its owner.
pub(crate) fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Creates `path` and its missing parents, owner-only (directories that exist keep their
/// mode).
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// `<path>.new`, where a file or directory is made before it is renamed into place.
pub(crate) fn beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Writes a small file aside and renames it into place, so that a crash of the process
/// leaves the old contents or the new ones, never a part. `durable` also syncs the file
/// before the rename and the directory after it, so that a power loss does too (for what is
/// written once; not for the term, counted at every take-over).
pub(crate) fn write_atomically(path: &Path, contents: &[u8], durable: bool) -> std::io::Result<()> {
    let written = beside(path);
    std::fs::write(&written, contents)?;
    if durable {
        std::fs::File::open(&written)?.sync_all()?;
    }
    std::fs::rename(&written, path)?;
    if durable {
        sync_parent(path)?;
    }
    Ok(())
}

/// Makes a rename into `path`'s directory durable.
pub(crate) fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

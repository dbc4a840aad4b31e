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
            None => default_socket(&dir),
        };
        Ok(Layout {
            store: dir.join(options.backend.name()),
            socket,
            dir,
        })
    }
}

/// On Windows: the named pipe `\\.\pipe\party\<absolute dir>`, without the `\\?\`
/// prefix that `canonicalize` puts on Windows paths.
#[cfg(windows)]
fn default_socket(dir: &Path) -> PathBuf {
    let dir = dir.display().to_string();
    let dir = dir.strip_prefix(r"\\?\").unwrap_or(&dir);
    PathBuf::from(format!(r"\\.\pipe\party\{dir}"))
}

/// `<dir>/party.sock`, or for a deep directory `/tmp/party-<hash of dir>.sock`: every
/// process of the directory derives the same name from the canonical path, without
/// anything to record or any environment variable that could differ between them.
#[cfg(not(windows))]
fn default_socket(dir: &Path) -> PathBuf {
    let socket = dir.join("party.sock");
    if socket.as_os_str().len() <= MAX_SOCKET_PATH {
        return socket;
    }
    PathBuf::from(format!(
        "/tmp/party-{:016x}.sock",
        fnv1a(dir.as_os_str().as_encoded_bytes())
    ))
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
        assert_eq!(default_socket(short), Path::new("/data/app/party.sock"));
        let deep = PathBuf::from(format!("/data/{}", "d/".repeat(60)));
        let socket = default_socket(&deep);
        assert!(socket.as_os_str().len() <= MAX_SOCKET_PATH, "{socket:?}");
        assert_eq!(
            socket,
            default_socket(&deep),
            "every process derives the same path"
        );
        assert_ne!(socket, default_socket(&deep.join("other")));
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

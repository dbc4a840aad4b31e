//! The free space the leader keeps on the store's disk.
//!
//! fjall 2.11 ignores a failed journal write and still reports the commit as done (fjall
//! issue #304, fixed in fjall 3): on a full or read-only disk, a write would be
//! acknowledged and then lost. So before every group of writes the leader looks at the
//! disk, and while it is read-only, or has less than the reserve free, it refuses the group
//! with a typed error. The reserve also leaves room for the store's own flushes and
//! compactions, which need space to free space.

use std::path::PathBuf;

use party_proto::ErrorCode;

#[derive(Debug)]
pub(crate) struct Headroom {
    /// A directory on the store's file system.
    path: PathBuf,
    reserve: u64,
    /// `path`, opened (`O_PATH`) at the first check: the checks after it ask the file
    /// system through it, without looking the path up again (three quarters of a check's
    /// cost, one check a group). `None` if it could not be opened; then, as where it does
    /// not answer, each check looks the path up.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    opened: std::cell::OnceCell<Option<std::os::fd::OwnedFd>>,
}

impl Headroom {
    pub fn new(path: PathBuf, reserve: u64) -> Headroom {
        Headroom {
            path,
            reserve,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            opened: std::cell::OnceCell::new(),
        }
    }

    /// Whether a write may go to the store now.
    pub fn check(&self) -> Result<(), ErrorCode> {
        #[cfg(unix)]
        {
            use rustix::fs::StatVfsMountFlags;
            // When the file system cannot be asked, the store's own errors still apply.
            if let Some(stat) = self.file_system() {
                let read_only = stat.f_flag.contains(StatVfsMountFlags::RDONLY);
                return self.verdict(read_only, stat.f_bavail.saturating_mul(stat.f_frsize));
            }
        }
        Ok(())
    }

    /// Whether a write may go to a file system that is read-only or not, with `free` bytes
    /// free to this process.
    #[cfg(unix)]
    fn verdict(&self, read_only: bool, free: u64) -> Result<(), ErrorCode> {
        if read_only {
            return Err(ErrorCode::StoreReadOnly);
        }
        if free < self.reserve {
            return Err(ErrorCode::StoreFull {
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }

    /// The store's file system's figures: through the opened directory where it answers,
    /// else by the path.
    #[cfg(unix)]
    fn file_system(&self) -> Option<rustix::fs::StatVfs> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::fs::{fstatvfs, open, Mode, OFlags};
            let opened = self.opened.get_or_init(|| {
                let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                open(&self.path, flags, Mode::empty()).ok()
            });
            if let Some(stat) = opened.as_ref().and_then(|dir| fstatvfs(dir).ok()) {
                return Some(stat);
            }
        }
        rustix::fs::statvfs(&self.path).ok()
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_any_disk_refuses_every_check_through_the_opened_directory() {
        let dir = tempfile::tempdir().unwrap();
        let headroom = Headroom::new(dir.path().to_owned(), u64::MAX);
        for _ in 0..2 {
            let refused = headroom.check();
            assert!(
                matches!(
                    refused,
                    Err(ErrorCode::StoreFull {
                        reserve: u64::MAX,
                        ..
                    })
                ),
                "{refused:?}"
            );
        }
        assert!(
            matches!(headroom.opened.get(), Some(Some(_))),
            "opened once"
        );
        assert_eq!(Headroom::new(dir.path().to_owned(), 0).check(), Ok(()));
    }

    /// A read-only file system refuses every write, whatever is free (a file system cannot
    /// be made read-only under a running leader's open journal to test it whole: tmpfs says
    /// it is busy); writes go on with exactly the reserve free, and stop one byte below.
    #[test]
    fn read_only_refuses_whatever_is_free_and_the_reserve_is_kept_to_the_byte() {
        let headroom = Headroom::new(std::path::PathBuf::from("unused"), 100);
        assert_eq!(
            headroom.verdict(true, u64::MAX),
            Err(ErrorCode::StoreReadOnly)
        );
        assert_eq!(headroom.verdict(false, 100), Ok(()));
        assert_eq!(
            headroom.verdict(false, 99),
            Err(ErrorCode::StoreFull {
                free: 99,
                reserve: 100
            })
        );
    }

    /// A file system mounted read-only is refused by the check itself, through the flag
    /// it reports. Runs again as a child in a mount namespace of its own (`unshare`, as
    /// root: CI runs as root), where a fresh tmpfs is mounted read-only on a directory.
    #[test]
    fn a_read_only_file_system_is_refused_by_the_check() {
        const MOUNTED: &str = "PARTY_TEST_READ_ONLY_MOUNT";
        const NAME: &str = "headroom::tests::a_read_only_file_system_is_refused_by_the_check";
        if let Some(dir) = std::env::var_os(MOUNTED) {
            let headroom = Headroom::new(dir.into(), 0);
            assert_eq!(headroom.check(), Err(ErrorCode::StoreReadOnly));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mount_then_test = r#"mount -t tmpfs -o ro party-test "$0" && exec "$@""#;
        let output = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(mount_then_test)
            .arg(dir.path())
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads", "1"])
            .env(MOUNTED, dir.path())
            .output()
            .expect("unshare runs");
        let said = String::from_utf8_lossy(&output.stdout);
        let complained = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && said.contains("1 passed"),
            "the check in a read-only mount (needs root): {said}{complained}"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_opened_is_looked_up_at_each_check() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, b"").unwrap();
        let headroom = Headroom::new(file, u64::MAX);
        let refused = headroom.check();
        assert!(
            matches!(refused, Err(ErrorCode::StoreFull { .. })),
            "{refused:?}"
        );
        assert!(matches!(headroom.opened.get(), Some(None)), "not opened");
    }
}

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

#[derive(Debug, Clone)]
pub(crate) struct Headroom {
    /// A directory on the store's file system.
    pub path: PathBuf,
    pub reserve: u64,
}

impl Headroom {
    /// Whether a write may go to the store now.
    pub fn check(&self) -> Result<(), ErrorCode> {
        #[cfg(unix)]
        {
            use rustix::fs::{statvfs, StatVfsMountFlags};
            // When the file system cannot be asked, the store's own errors still apply.
            let Ok(stat) = statvfs(&self.path) else {
                return Ok(());
            };
            if stat.f_flag.contains(StatVfsMountFlags::RDONLY) {
                return Err(ErrorCode::StoreReadOnly);
            }
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            if free < self.reserve {
                return Err(ErrorCode::StoreFull {
                    free,
                    reserve: self.reserve,
                });
            }
        }
        Ok(())
    }
}

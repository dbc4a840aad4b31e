//! A leader process whose disk fills up: followers get a typed error, the leader keeps
//! serving and does not panic, and nothing acknowledged is lost, even across a SIGKILL; on
//! a read-only disk a handle reports why it cannot lead. The disk is a small tmpfs this test mounts, so it runs as root (as CI
//! does); it says so and fails otherwise.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::Duration;

use party_core::{open, Db, Error, Options, Role};
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            mounted,
            "this test mounts a tmpfs to fill a disk: run it as root (CI does)"
        );
        Tmpfs(dir.to_owned())
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes that do not compress, so they take their size on disk.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn assert_all_there(db: &Db, acked: &[u64]) {
    for &n in acked {
        let value = db.get(format!("k{n:04}")).await.unwrap();
        assert!(
            value.as_deref() == Some(&noise(n, VALUE_LEN)[..]),
            "acknowledged write k{n:04} is missing or wrong"
        );
    }
}

const VALUE_LEN: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_then_read_only_disk_gives_typed_errors_and_loses_nothing() {
    let mount_point = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(mount_point.path(), "80m");
    let dir = mount_point.path().join("data");
    let mut leader = Node::spawn(NODE, &dir, &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    assert_eq!(leader.send("put probe yes"), "ok");
    let follower = open(&dir, Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);

    // Fill the 80 MiB disk: past 16 MiB the 64 MiB reserve is reached.
    let mut acked = Vec::new();
    let full = loop {
        let n = acked.len() as u64;
        assert!(n < 320, "80 MB written to an 80 MB disk without an error");
        match follower.put(format!("k{n:04}"), noise(n, VALUE_LEN)).await {
            Ok(()) => acked.push(n),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(full, Error::StoreFull { reserve, free } if reserve == 64 << 20 && free < reserve),
        "{full:?}"
    );
    assert!(acked.len() >= 16, "only {} writes fit", acked.len());
    assert_all_there(&follower, &acked).await;
    assert_eq!(leader.send("get probe"), "ok yes", "the leader serves on");

    // With room again, writes go through; after a SIGKILL the new leader has them all.
    disk.remount("rw,size=400m");
    follower.put("after", "room").await.unwrap();
    leader.kill();
    let mut role = follower.watch_role();
    let took_over = tokio::time::timeout(
        Duration::from_secs(30),
        role.wait_for(|state| state.role == Role::Leader),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    assert!(took_over, "the follower did not take over");
    assert_all_there(&follower, &acked).await;
    assert_eq!(follower.get("after").await.unwrap(), Some(b"room".to_vec()));
    follower.close().await.unwrap();

    // Read-only (a busy file system cannot be remounted so, hence after the close): a new
    // handle cannot lead, and says why instead of panicking.
    disk.remount("ro");
    let handle = open(&dir, Options::default()).await.unwrap();
    let failed = handle.ready().await.unwrap_err();
    assert!(
        matches!(&failed, Error::ElectionFailed(cause) if cause.to_string().contains("Read-only")),
        "{failed:?}"
    );
}

//! A throwaway etcd cluster on loopback ports, for tests, demos and benchmarks: members run
//! the `etcd` binary (Debian's `etcd-server`) with their data in a temporary directory, and
//! go when the cluster is dropped, or when the process that started them ends in any way.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{EtcdBackend, EtcdConfig};
use crate::error::OpenError;

/// Runs one member: `sh -c MEMBER_SHELL LOG DIR ROOT ETCD_ARGS…`.
const MEMBER_SHELL: &str = r#"log=$0 dir=$1 root=$2
shift 2
etcd "$@" 2>"$log" &
member=$!
read -r line
kill -9 "$member"
wait "$member"
if [ "$line" != keep ]; then
    rm -rf "$dir" "$log"
    rmdir "$root" 2>/dev/null
fi
exit 0"#;

/// How long a new cluster may take to elect its first leader.
const STARTUP: Duration = Duration::from_secs(30);

/// One member: its ports, and the process while it runs.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

/// A local etcd cluster. Dropping it stops every member and deletes their data.
#[derive(Debug)]
pub struct LocalCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    data: PathBuf,
}

/// Ports the members listen on: below Linux's ephemeral range (32768 and up). A port the
/// kernel handed out as free (port 0) could be taken, before the member bound it, as the
/// local port of an outgoing connection (the tests make many); then the member could not
/// listen, and the cluster failed to start after 30 s of `ConnectionReset`.
const MEMBER_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A port of [`MEMBER_PORTS`] no one listens on now. Each call of this process takes the
/// next one from a point chosen at random, so that two members (or two clusters of one
/// test binary) never get the same port, and two processes seldom do.
fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = u32::from(MEMBER_PORTS.end - MEMBER_PORTS.start);
    let next = NEXT.get_or_init(|| {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        AtomicU32::new((random % u64::from(span)) as u32)
    });
    for _ in 0..span {
        let offset = next.fetch_add(1, Ordering::Relaxed) % span;
        let port = MEMBER_PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port below the ephemeral range",
    ))
}

impl LocalCluster {
    /// Starts `size` members and waits until the cluster serves. Blocks: call it before
    /// entering an async runtime, or where blocking is allowed.
    pub fn start(size: usize) -> Result<LocalCluster, OpenError> {
        let failed = |source: std::io::Error| OpenError::Store {
            backend: "etcd",
            path: PathBuf::from("a local etcd cluster"),
            source: Box::new(source),
        };
        let data = std::env::temp_dir().join(format!(
            "party-etcd-{}-{}",
            std::process::id(),
            free_port().map_err(failed)?
        ));
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port().map_err(failed)?,
                peer_port: free_port().map_err(failed)?,
                process: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            token: data.display().to_string(),
            members,
            initial_cluster,
            data,
        };
        for i in 0..size {
            cluster.restart(i).map_err(failed)?;
        }
        cluster.wait_until_serving()?;
        Ok(cluster)
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| url(m.client_port)).collect()
    }

    /// Kills member `i` (SIGKILL); its data stays, for [`LocalCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        self.stop(i, true);
    }

    /// Has member `i`'s shell kill it (keeping its data or not) and waits for that.
    fn stop(&mut self, i: usize, keep_data: bool) {
        if let Some(mut process) = self.members[i].process.take() {
            if let Some(mut stdin) = process.stdin.take() {
                if keep_data {
                    let _ = stdin.write_all(b"keep\n");
                }
            }
            let _ = process.wait();
        }
    }

    /// Starts member `i` again (or for the first time), on its data.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill(i);
        let member = &self.members[i];
        let dir = self.data.join(&member.name);
        let state = if dir.exists() { "existing" } else { "new" };
        std::fs::create_dir_all(&self.data)?;
        // The shell kills the member once our end of its stdin closes: when this cluster
        // is dropped, or when this process ends, even by SIGKILL; then it deletes the
        // member's data and log, unless told to keep them (for a restart).
        let process = Command::new("sh")
            .arg("-c")
            .arg(MEMBER_SHELL)
            .arg(log_path(&self.data, &member.name))
            .arg(&dir)
            .arg(&self.data)
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen-client-urls", &url(member.client_port)])
            .args(["--advertise-client-urls", &url(member.client_port)])
            .args(["--listen-peer-urls", &url(member.peer_port)])
            .args(["--initial-advertise-peer-urls", &url(member.peer_port)])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.members[i].process = Some(process);
        Ok(())
    }

    fn wait_until_serving(&self) -> Result<(), OpenError> {
        let config = EtcdConfig {
            endpoints: self.endpoints(),
            prefix: b"party-cluster-check/".to_vec(),
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            match EtcdBackend::connect(&config) {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn log_path(data: &Path, name: &str) -> PathBuf {
    data.join(format!("{name}.log"))
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i, false);
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kill` returns once the member is gone: its client port no longer takes
    /// connections (a restart on the same ports and data then never meets the old one),
    /// and dropping the cluster leaves no member listening either.
    #[test]
    fn a_killed_member_is_gone_when_kill_returns() {
        let mut cluster = LocalCluster::start(1).unwrap();
        let port = cluster.members[0].client_port;
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        cluster.kill(0);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the member still listens after kill returned"
        );
        cluster.restart(0).unwrap();
        cluster.wait_until_serving().unwrap();
        drop(cluster);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a member still listens after the cluster was dropped"
        );
    }
}

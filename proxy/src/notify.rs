//! What a service manager needs to follow the edge through a zero-downtime upgrade: the pid
//! file (`shutdown.pid_file`, written in the foreground too, not only in Pingora's daemon
//! mode) and systemd's readiness protocol (`sd_notify`: one datagram to `$NOTIFY_SOCKET`).
//!
//! A process started with `--upgrade` announces `MAINPID=<its pid>` as soon as it holds the
//! listening sockets, so that systemd (`Type=notify`, `NotifyAccess=all`) follows the new
//! process instead of stopping the unit when the old one exits.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`. `Ok(false)` when not run by a service
/// manager that asked for it.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (what systemd uses): a leading '@' stands for the NUL byte.
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(io::Error::other("abstract NOTIFY_SOCKET outside Linux"));
        }
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

/// The pid file of a running edge; removed on drop unless a successor (an upgrade) has
/// written its own pid there meanwhile.
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    pub fn write(path: &Path) -> anyhow::Result<Self> {
        let pid = std::process::id();
        std::fs::write(path, format!("{pid}\n")).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the pid file {} (shutdown.pid_file): {e}",
                path.display()
            )
        })?;
        Ok(PidFile {
            path: path.to_owned(),
            pid,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == self.pid.to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_is_removed_only_while_it_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.pid");
        drop(PidFile::write(&path).unwrap());
        assert!(!path.exists());

        let pid = PidFile::write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        // A successor took over: its pid file stays.
        std::fs::write(&path, "4242\n").unwrap();
        drop(pid);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
    }

    #[test]
    fn an_unwritable_pid_file_names_the_key() {
        let err = PidFile::write(Path::new("/nonexistent-dir/edge.pid"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("shutdown.pid_file"), "{err}");
    }
}

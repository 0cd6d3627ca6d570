//! A zero-downtime reload that keeps the cache: the new process starts with the old one's
//! entries, and purges made by either while both serve reach the other.
//!
//! `reviews proxy --reload` runs the protocol:
//! 1. It sends the running edge SIGUSR1. The old process starts journaling its purges
//!    (`cache/journal.rs`) and then writes its cache to the handover snapshot
//!    (`<upgrade_sock>.cache`, through a temporary file renamed at the end).
//! 2. Once the snapshot is there, it starts the new process (`--upgrade`), which loads the
//!    snapshot, opens the journal, applies what the old process purged since, and only then
//!    takes the listeners over (Pingora's upgrade socket). It never serves from a cold cache.
//! 3. It sends the old process SIGQUIT: Pingora hands the listeners over and the old process
//!    drains. Until it exits, both journal their purges and read the other's before every
//!    lookup; the new process then removes the journal and the snapshot.
//!
//! A snapshot is taken as the old one's only when the pid it names is the edge in the pid
//! file: a leftover file from an earlier reload is never loaded. Without `--reload` (the
//! manual `--upgrade` + SIGQUIT) the new process finds no snapshot and starts cold.
//!
//! The HTTPS listeners' TLS sessions go the same way, in their own file written before the
//! snapshot (`<upgrade_sock>.tls`, see `downstream/session_file.rs`): returning clients keep
//! resuming across a reload instead of all making full handshakes at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::cache::{Cache, snapshot};
use crate::config::EdgeConfig;
use crate::downstream::session_file::{self, Stores};

/// The handover snapshot and the purge journal, beside the upgrade socket.
pub fn paths(config: &EdgeConfig) -> (PathBuf, PathBuf) {
    let sock = &config.shutdown.upgrade_sock;
    (
        PathBuf::from(format!("{sock}.cache")),
        PathBuf::from(format!("{sock}.purges")),
    )
}

/// The file of TLS sessions handed over, beside the upgrade socket.
pub fn sessions_path(config: &EdgeConfig) -> PathBuf {
    PathBuf::from(format!("{}.tls", config.shutdown.upgrade_sock))
}

/// The old process's side: on SIGUSR1, journal purges and write the snapshot.
pub struct OnRequest {
    pub cache: Arc<Cache>,
    pub config: Arc<EdgeConfig>,
    /// The HTTPS listeners' session stores.
    pub sessions: Stores,
}

impl OnRequest {
    async fn hand_over(&self) {
        // Before the snapshot, whose appearance the reloader waits for: by then this file is
        // complete too. A few hundred bytes per session (about 10 MB at the default 32,768).
        if !self.sessions.is_empty() {
            let path = sessions_path(&self.config);
            let sessions = self.sessions.clone();
            let written =
                tokio::task::spawn_blocking(move || session_file::write(&path, &sessions)).await;
            match written {
                Ok(Ok(n)) => tracing::info!(sessions = n, "TLS sessions written for the new edge"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot write the TLS sessions for the new edge: its clients make full handshakes")
                }
                Err(e) => tracing::warn!(error = %e, "the TLS session writer panicked"),
            }
        }
        let (snapshot_path, journal_path) = paths(&self.config);
        // Journal first: a purge made while the snapshot is written must reach the new
        // process whether or not its entry made it into the file.
        if let Err(e) = self.cache.journal.start(&journal_path, true) {
            tracing::warn!(error = %e, path = %journal_path.display(), "cannot open the purge journal; the new edge starts cold");
            return;
        }
        let cache = self.cache.clone();
        let deadline = self.config.cache.snapshot_timeout.get();
        let written =
            tokio::task::spawn_blocking(move || snapshot::write(&cache, &snapshot_path, deadline))
                .await;
        match written {
            Ok(Ok(w)) => tracing::info!(
                entries = w.entries,
                bytes = w.bytes,
                cut_short = w.cut_short,
                "cache written for the new edge"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the cache for the new edge"),
            Err(e) => tracing::warn!(error = %e, "the cache writer panicked"),
        }
    }
}

#[async_trait]
impl BackgroundService for OnRequest {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut requests = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGUSR1: reloads start cold");
                return;
            }
        };
        loop {
            tokio::select! {
                Some(()) = requests.recv() => self.hand_over().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The new process's side, before it takes the listeners: loads the old process's TLS
/// sessions and snapshot and follows its purges until it exits. Returns the old process's
/// pid when it took over.
pub fn take_over(cache: &Arc<Cache>, config: &EdgeConfig, sessions: &Stores) -> Option<Pid> {
    let (snapshot_path, journal_path) = paths(config);
    let running = std::fs::read_to_string(&config.shutdown.pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse::<i32>().ok());
    take_sessions(config, sessions, running);
    let running = running?;
    if !snapshot_path.exists() {
        tracing::info!("no cache from the running edge (reload without --reload?): starting cold");
        return None;
    }
    match snapshot::header(&snapshot_path) {
        Ok(h) if h.writer_pid as i32 == running => {}
        Ok(h) => {
            tracing::warn!(
                writer = h.writer_pid,
                running,
                "the handover snapshot is not the running edge's: starting cold"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the handover snapshot: starting cold");
            return None;
        }
    }
    // The journal before the snapshot: purges made while loading are not missed.
    if let Err(e) = cache.journal.start(&journal_path, false) {
        tracing::warn!(error = %e, "cannot open the purge journal: starting cold");
        return None;
    }
    let started = Instant::now();
    match snapshot::load(cache, &snapshot_path) {
        Ok((_, loaded)) => {
            cache.apply_peer_purges();
            tracing::info!(
                entries = loaded.entries,
                bytes = loaded.bytes,
                ms = started.elapsed().as_millis() as u64,
                from = running,
                "took over the running edge's cache"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the handover snapshot: starting cold");
            cache.journal.stop(false);
            return None;
        }
    }
    let old = Pid::from_raw(running);
    follow(cache.clone(), old, snapshot_path, journal_path);
    Some(old)
}

/// Loads the TLS sessions the running edge (`running`) wrote for this process, then deletes
/// the file (it holds resumption secrets), whoever wrote it.
fn take_sessions(config: &EdgeConfig, sessions: &Stores, running: Option<i32>) {
    let path = sessions_path(config);
    if !path.exists() {
        return;
    }
    let handed = session_file::read(&path);
    let _ = std::fs::remove_file(&path);
    match handed {
        Ok(h) if running.is_some_and(|r| h.writer_pid as i32 == r) => {
            let n = session_file::import(h, sessions);
            tracing::info!(sessions = n, "took over the running edge's TLS sessions");
        }
        Ok(h) => tracing::warn!(
            writer = h.writer_pid,
            ?running,
            "the TLS session file is not the running edge's: not loaded"
        ),
        Err(e) => tracing::warn!(error = %e, "ignoring the TLS session file"),
    }
}

/// Deletes TLS sessions left by an earlier reload whose new process never read them.
pub fn remove_stale_sessions(config: &EdgeConfig) {
    let _ = std::fs::remove_file(sessions_path(config));
}

/// Applies the old process's purges every 100 ms (lookups apply them too) until it exits,
/// then removes the journal and the snapshot.
fn follow(cache: Arc<Cache>, old: Pid, snapshot_path: PathBuf, journal_path: PathBuf) {
    let watched = cache.clone();
    let spawned = std::thread::Builder::new()
        .name("handover".into())
        .spawn(move || {
            let cache = watched;
            while kill(old, None).is_ok() {
                cache.apply_peer_purges();
                std::thread::sleep(Duration::from_millis(100));
            }
            cache.apply_peer_purges();
            cache.journal.stop(true);
            let _ = std::fs::remove_file(snapshot::position_path(&snapshot_path));
            let _ = std::fs::remove_file(&snapshot_path);
            let _ = std::fs::remove_file(&journal_path);
            tracing::info!(old = old.as_raw(), "the old edge is gone: handover done");
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot follow the old edge's purges");
        cache.journal.stop(false);
    }
}

/// The reloader's first step: asks the running edge for its cache and waits until it is
/// written (at most `timeout`). False when it did not come: the new process starts cold.
pub fn request_snapshot(old: Pid, config: &EdgeConfig, timeout: Duration) -> bool {
    let (snapshot_path, _) = paths(config);
    let _ = std::fs::remove_file(&snapshot_path);
    remove_stale_sessions(config);
    if let Err(e) = kill(old, Signal::SIGUSR1) {
        tracing::warn!(error = %e, "cannot ask the running edge for its cache");
        return false;
    }
    wait_for(&snapshot_path, timeout)
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests {
    use rustls::server::StoresServerSessions;

    use super::*;

    fn stores(addr: &str) -> Stores {
        vec![(
            addr.parse().unwrap(),
            Arc::new(crate::downstream::sessions::SessionStore::new(8)),
        )]
    }

    /// Sessions are loaded only from the running edge's file, and the file (resumption
    /// secrets) is deleted whether it was loaded or not.
    #[test]
    fn tls_sessions_load_only_from_the_running_edge_and_never_stay_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EdgeConfig::default();
        config.shutdown.upgrade_sock = dir.path().join("up.sock").display().to_string();
        let old = stores("127.0.0.1:8443");
        old[0].1.put(vec![1; 32], vec![2; 100]);
        let me = std::process::id() as i32;

        session_file::write(&sessions_path(&config), &old).unwrap();
        let new = stores("127.0.0.1:8443");
        take_sessions(&config, &new, Some(me + 1));
        assert!(new[0].1.export().is_empty(), "another edge's file");
        assert!(!sessions_path(&config).exists());

        session_file::write(&sessions_path(&config), &old).unwrap();
        take_sessions(&config, &new, Some(me));
        assert_eq!(new[0].1.export(), vec![(vec![1; 32], vec![2; 100])]);
        assert!(!sessions_path(&config).exists());

        std::fs::write(sessions_path(&config), b"garbage").unwrap();
        take_sessions(&config, &new, Some(me));
        assert!(!sessions_path(&config).exists());
    }
}

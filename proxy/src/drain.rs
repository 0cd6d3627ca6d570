//! Ending a graceful shutdown as soon as it is done. After SIGTERM (or the SIGQUIT of a
//! zero-downtime upgrade) Pingora stops accepting and then sleeps the whole
//! `shutdown.grace_period`, whether requests are still in flight or not: an idle edge took
//! 10 s to stop. The edge counts its open client connections (see [`crate::downstream`]);
//! once the grace period has begun and none is left, the process finishes its exit work
//! and exits at once, as NGINX does when its last connection closes. With connections still
//! open when the grace period ends, Pingora's own shutdown proceeds as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pingora_core::server::ExecutionPhase;
use tokio::sync::broadcast;

const POLL: Duration = Duration::from_millis(20);

/// Watches the server's phases on a thread of its own; when the grace period starts, waits
/// for `open` to reach zero (at most `grace`), then runs `before_exit` and exits with 0.
/// `handed_over` is set when the shutdown is an upgrade's (the listeners went to a new
/// process), so exit work can tell the two apart.
pub fn exit_when_drained(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    open: Arc<AtomicUsize>,
    grace: Duration,
    handed_over: Arc<AtomicBool>,
    before_exit: impl FnOnce() + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("drain-watch".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                        handed_over.store(true, Ordering::SeqCst);
                    }
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(ExecutionPhase::Terminated) | Err(broadcast::error::RecvError::Closed) => {
                        return;
                    }
                    _ => {}
                }
            }
            let deadline = Instant::now() + grace;
            while open.load(Ordering::SeqCst) > 0 {
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(POLL);
            }
            tracing::info!("no connection left to drain: exiting");
            before_exit();
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the drain; the full grace period applies");
    }
}

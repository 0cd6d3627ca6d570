//! Children of `reviews up` must not outlive it: killed outright (SIGKILL, a closed terminal),
//! `up` can stop nothing, and its API and edge processes would keep holding the ports. `up`
//! names itself in [`PARENT_ENV`]; a process started with it watches that pid and, once it
//! is gone, stops itself as on SIGTERM (draining what is in flight). Polling the pid rather
//! than asking the kernel for a parent-death signal also covers an edge started by a
//! zero-downtime reload, whose parent is the reload command, not `up`.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable naming the process to outlive no longer than.
pub const PARENT_ENV: &str = "REVIEWS_UP_PID";

const POLL: Duration = Duration::from_millis(250);

/// Starts the watch when this process was started by `reviews up`.
pub fn watch_parent() {
    let Some(parent) = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|&p| p > 1)
    else {
        return;
    };
    let parent = Pid::from_raw(parent);
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            while kill(parent, None).is_ok() {
                std::thread::sleep(POLL);
            }
            eprintln!("reviews up (pid {parent}) is gone: stopping");
            let _ = kill(Pid::this(), Signal::SIGTERM);
        });
    if let Err(e) = spawned {
        eprintln!("warning: cannot watch the parent process: {e}");
    }
}

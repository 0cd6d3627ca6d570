//! Zero-downtime upgrade of the edge, with real processes: an API process, an edge process,
//! a client sending requests on fresh connections all along, then `reviews proxy --reload`
//! (a second edge started with `--upgrade`, the first sent SIGQUIT). No request may fail, the
//! new process must announce itself to the service manager (`MAINPID=`, `READY=1` on
//! `$NOTIFY_SOCKET`) and own the pid file, and the old one must exit 0.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::helpers::{PidGuard, Stack, reload_command, wait_until};

/// The next sd_notify datagram, as text.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("an sd_notify message within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_listeners_over_without_failing_a_request() {
    let s = Stack::start().await;
    let d = s.dir.path();
    let listen = s.listen;
    let pid_file = d.join("edge.pid");
    // Fresh connections for every request: a refused or reset connection during the handover
    // shows as an error.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let config = s.config();
    let config = config.as_str();
    let notify_path = d.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut old = s.edge_notifying("edge-old.log", Some(&notify_path));
    let old_pid = old.0.id();
    assert_eq!(
        next_notification(&notify),
        format!("MAINPID={old_pid}\nREADY=1")
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        old_pid.to_string()
    );

    // A client on fresh connections (each request connects anew, so a refused or reset
    // connection during the handover shows as an error).
    let url = format!("http://{listen}/reviews?product_id=1");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, client) = (stop.clone(), ok.clone(), failed.clone(), client.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("status {}", r.status()));
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{e:?}"));
                    }
                }
            }
            errors
        })
    };
    let ok_before = |n: u64| {
        let ok = ok.clone();
        move || ok.load(Ordering::Relaxed) >= n
    };
    wait_until(
        "requests through the old edge",
        Duration::from_secs(20),
        ok_before(20),
    );

    // `--reload` (the unit's ExecReload=): starts `reviews proxy --upgrade`, signals the old
    // edge and returns once the new one holds the listeners.
    let reload = reload_command(config, &d.join("edge-new.log"))
        .env("NOTIFY_SOCKET", &notify_path)
        .status()
        .unwrap();
    assert!(reload.success(), "reviews proxy --reload failed: {reload}");
    let new_pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, old_pid, "the pid file names the new edge");
    // Killed at the end of the test, like the other processes.
    let _new = PidGuard(new_pid);
    assert_eq!(
        next_notification(&notify),
        format!("MAINPID={new_pid}\nREADY=1")
    );
    let status = tokio::task::spawn_blocking(move || old.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the old edge exited with {status}");
    let after_exit = ok.load(Ordering::Relaxed);
    wait_until(
        "requests through the new edge",
        Duration::from_secs(20),
        ok_before(after_exit + 20),
    );
    stop.store(true, Ordering::Relaxed);
    let errors = load.await.unwrap();
    assert!(
        errors.is_empty(),
        "{} of {} requests failed during the upgrade: {:?}",
        errors.len(),
        ok.load(Ordering::Relaxed) + errors.len() as u64,
        &errors[..errors.len().min(5)]
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        new_pid.to_string(),
        "the new edge owns the pid file"
    );
    // The old process is gone: the new one is answering.
    let r = client
        .get(format!("http://{listen}/reviews?product_id=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(kill(Pid::from_raw(new_pid as i32), None).is_ok());
}

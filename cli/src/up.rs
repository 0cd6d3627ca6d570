//! `reviews up`: the whole stack on one machine, on SQLite, in one command. It makes a demo
//! data set if the database is empty, starts N API processes and the edge in front of them
//! (real child processes of this binary, as they run in production), waits until each is
//! ready, prints where to point curl, and stops everything cleanly on Ctrl-C or SIGTERM.
//!
//! The edge runs from `deploy/edge.example.toml` (compiled in) with this machine's addresses
//! filled in, written next to the database as `edge.toml`, so an operator can reload it
//! (`reviews proxy --config data/edge.toml --reload`) as in production; `up` follows the edge
//! across such a handover. The children watch this process (`REVIEWS_UP_PID`) and stop when
//! it is gone, even if it was killed outright.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reviews_proxy::{EdgeConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::lifeline::PARENT_ENV;

/// The operator's example edge config: `up` runs the same file with local addresses.
const EDGE_TEMPLATE: &str = include_str!("../../deploy/edge.example.toml");

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// API processes to start.
    #[arg(long, default_value_t = 2)]
    pub apis: u16,
    /// The SQLite file (created and filled with demo data if empty).
    #[arg(long, default_value = "data/reviews.db")]
    pub db: PathBuf,
    /// First API port; process i listens on port + i, its metrics on port + 100 + i.
    #[arg(long, default_value_t = 3001)]
    pub api_port: u16,
    /// The edge's public port (what clients use).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The edge's admin port (/metrics, /purge).
    #[arg(long, default_value_t = 9090)]
    pub admin_port: u16,
    /// The edge's cache size.
    #[arg(long, default_value = "256MiB")]
    pub cache_size: reviews_shared::units::ByteSize,
    /// Products in the demo data set made when the database is empty (ids 1..=N).
    #[arg(long, default_value_t = 100_000)]
    pub demo_products: u64,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.apis == 0 {
        bail!("--apis must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(up(args))
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db_url = format!("sqlite://{}", args.db.display());
    if !reviews_api::store::has_reviews(&db_url).await? {
        make_demo_data(&args, &db_url).await?;
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let me = std::process::id().to_string();

    let mut apis: Vec<(SocketAddr, Child)> = Vec::new();
    for i in 0..args.apis {
        let addr = SocketAddr::from(([127, 0, 0, 1], args.api_port + i));
        let metrics = SocketAddr::from(([127, 0, 0, 1], args.api_port + 100 + i));
        let child = Command::new(&exe)
            .args([
                "api",
                "--listen",
                &addr.to_string(),
                "--metrics-listen",
                &metrics.to_string(),
            ])
            .args(["--database-url", &db_url])
            .env(PARENT_ENV, &me)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start an API process")?;
        apis.push((addr, child));
    }
    for (addr, child) in &mut apis {
        wait_ready(*addr, "/readyz", child).await?;
    }

    let edge_config = edge_config(&args, &dir, apis.iter().map(|(a, _)| *a))?;
    let edge_toml = dir.join("edge.toml");
    write_edge_config(&edge_toml, &edge_config)?;
    let mut edge = Command::new(&exe)
        .arg("proxy")
        .arg("--config")
        .arg(&edge_toml)
        .env(PARENT_ENV, &me)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the edge")?;
    wait_ready(edge_config.admin.address, "/healthz", &mut edge).await?;
    wait_listening(edge_config.listen.address).await?;

    let front = edge_config.listen.address;
    println!();
    println!(
        "Reviews stack is up on http://{front} (edge with a {} cache over {} API processes, SQLite at {}):",
        args.cache_size,
        args.apis,
        args.db.display()
    );
    println!(
        "  edge  http://{front}  (metrics: http://{}/metrics, config: {})",
        edge_config.admin.address,
        edge_toml.display()
    );
    for (addr, _) in &apis {
        println!("  API   http://{addr}");
    }
    println!();
    println!(
        "Try:  curl -i 'http://{front}/reviews/meta?product_id=1'   (again for X-Cache-Status: hit)"
    );
    println!("      curl 'http://{front}/reviews?product_id=1&count=2'");
    println!("      reviews load --url http://{front} --scenario reviews-random50k-7k");
    println!(
        "      reviews proxy --config {} --reload   (zero-downtime edge reload)",
        edge_toml.display()
    );
    println!("Ctrl-C stops everything.");

    let pid_file = PathBuf::from(&edge_config.shutdown.pid_file);
    let mut edge = EdgeProcess::Child(edge);
    let outcome = tokio::select! {
        _ = reviews_api::server::shutdown_signal() => Ok(()),
        (res, idx) = any_exit(&mut apis) => {
            Err(anyhow::anyhow!("API process {idx} exited unexpectedly: {res:?}"))
        }
        res = edge.follow(&pid_file) => {
            Err(anyhow::anyhow!("the edge exited unexpectedly: {res}"))
        }
    };
    eprintln!("stopping…");
    // The edge first, so no request is sent to an API process that is going away.
    edge.stop().await;
    stop_all(apis).await;
    outcome.map(|()| ExitCode::SUCCESS)
}

/// The example edge config with this machine's addresses, files next to the database, and
/// connection limits that fit the file-descriptor limit a workstation has.
fn edge_config(
    args: &UpArgs,
    dir: &Path,
    apis: impl Iterator<Item = SocketAddr>,
) -> anyhow::Result<EdgeConfig> {
    let mut c = EdgeConfig::from_toml_unvalidated(EDGE_TEMPLATE)
        .context("the compiled-in deploy/edge.example.toml")?;
    c.upstream.servers = apis.map(Upstream::new).collect();
    c.listen.address = SocketAddr::from(([127, 0, 0, 1], args.port));
    c.admin.address = SocketAddr::from(([127, 0, 0, 1], args.admin_port));
    c.cache.max_size = args.cache_size;
    c.log.format = reviews_proxy::config::LogFormat::Pretty;
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    c.shutdown.pid_file = abs.join("edge.pid").display().to_string();
    c.shutdown.upgrade_sock = abs.join("edge-upgrade.sock").display().to_string();
    // A restart of `up` starts with the pages the last run had cached.
    c.cache.snapshot_path = Some(abs.join("edge-cache.snapshot"));
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let fits = (hard.saturating_sub(512) / 2) as usize;
    if c.max_connections > fits {
        c.max_connections = fits.max(64);
        c.nofile = 0;
    }
    c.validate().context("the edge config for up")?;
    Ok(c)
}

fn write_edge_config(path: &Path, c: &EdgeConfig) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `reviews up` from deploy/edge.example.toml (see it for what each key does),\n\
         # with this machine's addresses. Rewritten on every `reviews up`.\n\n{}",
        toml::to_string_pretty(c).context("printing the edge config")?
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The edge `up` started, or the process that took over from it in a zero-downtime reload.
enum EdgeProcess {
    Child(Child),
    Successor(Pid),
}

impl EdgeProcess {
    /// Resolves when the edge is gone for good: the child exited without handing over to a
    /// successor (named by the pid file), or the successor exited.
    async fn follow(&mut self, pid_file: &Path) -> String {
        loop {
            match self {
                EdgeProcess::Child(child) => {
                    let status = child.wait().await;
                    let old = child.id();
                    // A handover: the old process exits 0 after the new one wrote its pid.
                    match successor(pid_file, old) {
                        Some(pid) if matches!(&status, Ok(s) if s.success()) => {
                            eprintln!("the edge was reloaded: now pid {pid}");
                            *self = EdgeProcess::Successor(pid);
                        }
                        _ => return format!("{status:?}"),
                    }
                }
                EdgeProcess::Successor(pid) => {
                    while kill(*pid, None).is_ok() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    match successor(pid_file, Some(pid.as_raw() as u32)) {
                        Some(next) => *self = EdgeProcess::Successor(next),
                        None => return format!("pid {pid} is gone"),
                    }
                }
            }
        }
    }

    /// SIGTERM (the edge drains, then exits), waiting at most 30 s.
    async fn stop(self) {
        match self {
            EdgeProcess::Child(mut child) => {
                if let Some(pid) = child.id() {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                }
                if tokio::time::timeout(Duration::from_secs(30), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            EdgeProcess::Successor(pid) => {
                let _ = kill(pid, Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(30);
                while kill(pid, None).is_ok() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The live process named in the pid file, when it is not `old`.
fn successor(pid_file: &Path, old: Option<u32>) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (Some(pid as u32) != old && kill(Pid::from_raw(pid), None).is_ok()).then(|| Pid::from_raw(pid))
}

/// Generates a demo data set with the project's own generator and imports it, so a fresh
/// clone has something to serve. Deterministic: the same products every time.
async fn make_demo_data(args: &UpArgs, db_url: &str) -> anyhow::Result<()> {
    let csv_dir = args.db.with_extension("demo-csv");
    eprintln!(
        "{} is empty: generating a demo data set of {} products into {} …",
        args.db.display(),
        args.demo_products,
        csv_dir.display()
    );
    let gen_opts = reviews_api::generate::GenerateOptions::new(&csv_dir, args.demo_products);
    tokio::task::spawn_blocking(move || reviews_api::generate::generate(&gen_opts))
        .await
        .context("the generator panicked")??;
    eprintln!("importing it …");
    let mut opts = reviews_api::import::ImportOptions::new(db_url, &csv_dir);
    opts.rejects = csv_dir.join("rejects.csv");
    opts.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let summary = reviews_api::import::import(&opts).await?;
    eprintln!("{summary}");
    // The CSVs were only a means to fill the database.
    let _ = std::fs::remove_dir_all(&csv_dir);
    Ok(())
}

/// Resolves when any child exits, with its status and index.
async fn any_exit(
    children: &mut [(SocketAddr, Child)],
) -> (std::io::Result<std::process::ExitStatus>, usize) {
    let waits = children.iter_mut().map(|(_, c)| Box::pin(c.wait()));
    let (res, idx, _) = futures::future::select_all(waits).await;
    (res, idx)
}

/// SIGTERM each child (they drain in-flight requests), then wait; SIGKILL stragglers.
async fn stop_all(children: Vec<(SocketAddr, Child)>) {
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for (_, mut child) in children {
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Polls `GET <path>` until it answers 200, failing early if the process dies.
async fn wait_ready(addr: SocketAddr, path: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the process for {addr} exited during startup ({status}); see its log above");
        }
        if get_ok(addr, path).await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the process for {addr} was not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `addr` accepts connections.
async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A bare HTTP/1.0 GET, enough for a readiness probe without pulling in an HTTP client.
async fn get_ok(addr: SocketAddr, path: &str) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"))
}

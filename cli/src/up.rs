//! `reviews up`: the whole stack on one machine, on SQLite, in one command. It makes a demo
//! data set if the database is empty, starts N API processes (real child processes of this
//! binary, as they run in production), waits until each is ready, puts the edge (load
//! balancer and cache) in front of them, prints where to point curl, and stops everything
//! cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

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

pub fn main(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.apis == 0 {
        bail!("--apis must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let db_url = format!("sqlite://{}", args.db.display());
    if !reviews_api::store::has_reviews(&db_url).await? {
        make_demo_data(&args, &db_url).await?;
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;

    let mut children: Vec<(SocketAddr, Child)> = Vec::new();
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
            .kill_on_drop(true)
            .spawn()
            .context("cannot start an API process")?;
        children.push((addr, child));
    }
    for (addr, child) in &mut children {
        wait_ready(*addr, child).await?;
    }
    let mut edge_config = reviews_proxy::EdgeConfig::for_reviews(children.iter().map(|(a, _)| *a));
    edge_config.listen = SocketAddr::from(([127, 0, 0, 1], args.port));
    edge_config.admin = SocketAddr::from(([127, 0, 0, 1], args.admin_port));
    edge_config.cache.max_size = args.cache_size.bytes();
    let edge = tokio::task::spawn_blocking(move || reviews_proxy::start(edge_config))
        .await
        .context("the edge panicked while starting")?
        .context("cannot start the edge")?;
    let front = edge.listen;
    println!();
    println!(
        "Reviews stack is up on http://{front} (edge with a {} cache over {} API processes, SQLite at {}):",
        args.cache_size,
        args.apis,
        args.db.display()
    );
    println!(
        "  edge  http://{front}  (metrics: http://{}/metrics)",
        edge.admin
    );
    for (addr, _) in &children {
        println!("  API   http://{addr}");
    }
    println!();
    println!(
        "Try:  curl -i 'http://{front}/reviews/meta?product_id=1'   (again for X-Cache-Status: hit)"
    );
    println!("      curl 'http://{front}/reviews?product_id=1&count=2'");
    println!("      reviews load --url http://{front} --scenario reviews-random50k-7k");
    println!("Ctrl-C stops everything.");

    tokio::select! {
        _ = reviews_api::server::shutdown_signal() => {}
        (res, idx, _) = futures_select(&mut children) => {
            bail!("API process {idx} exited unexpectedly: {res:?}");
        }
    }
    eprintln!("stopping…");
    // The edge first, so no request is sent to an API process that is going away.
    tokio::task::spawn_blocking(move || edge.shutdown_gracefully()).await?;
    stop_all(children).await;
    Ok(ExitCode::SUCCESS)
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
async fn futures_select(
    children: &mut [(SocketAddr, Child)],
) -> (std::io::Result<std::process::ExitStatus>, usize, ()) {
    let waits = children.iter_mut().map(|(_, c)| Box::pin(c.wait()));
    let (res, idx, _) = futures::future::select_all(waits).await;
    (res, idx, ())
}

/// SIGTERM each child (they drain in-flight requests), then wait; SIGKILL stragglers.
async fn stop_all(children: Vec<(SocketAddr, Child)>) {
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
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

/// Polls `GET /readyz` until it answers 200, failing early if the process dies.
async fn wait_ready(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the API process for {addr} exited during startup ({status}); see its log above");
        }
        if readyz(addr).await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the API process for {addr} was not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bare HTTP/1.0 GET, enough for a readiness probe without pulling in an HTTP client.
async fn readyz(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"))
}

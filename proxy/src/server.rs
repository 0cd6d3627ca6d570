//! Building and running the Pingora server: the proxy service on the public listener, the
//! admin service (one thread) on the internal one, and the health checker in the background.
//! [`run`] is the `reviews proxy` command; [`start`] runs the same server on a thread for
//! tests and for `reviews up`, returning its bound addresses and a shutdown handle.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use tokio::sync::oneshot;

use crate::admin::Admin;
use crate::balancer::Balancer;
use crate::cache::{Cache, snapshot};
use crate::config::EdgeConfig;
use crate::downstream::Downstream;
use crate::drain;
use crate::handover;
use crate::health::HealthChecker;
use crate::logbridge;
use crate::metrics;
use crate::notify::{PidFile, sd_notify};
use crate::proxy::Edge;
use reviews_shared::invalidation::{self, PublishMetrics, Publisher};

/// `reviews proxy`: run the edge.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// The edge config (TOML); see deploy/edge.example.toml. Without it, the defaults plus
    /// REVIEWS_EDGE__… environment overrides are used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the config, print the effective one and exit (like `nginx -t`).
    #[arg(long)]
    pub check: bool,
    /// Take over the listening sockets of a running edge (zero-downtime upgrade), then send
    /// the old process SIGQUIT.
    #[arg(long)]
    pub upgrade: bool,
    /// Zero-downtime upgrade in one command (systemd's ExecReload=): start the binary on disk
    /// with `--upgrade`, send the running edge (the pid in shutdown.pid_file) SIGQUIT, and
    /// return once the new process serves. The new process keeps running.
    #[arg(long, conflicts_with_all = ["upgrade", "check"])]
    pub reload: bool,
}

/// Runs the edge until SIGTERM (graceful: drain for `shutdown.grace_period`), SIGINT (fast)
/// or SIGQUIT (graceful upgrade: hand the listeners to a process started with `--upgrade`).
pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let config = EdgeConfig::load(args.config.as_deref(), &[]).context("invalid edge config")?;
    if args.check {
        let mut shown = config.clone();
        if shown.admin.token().is_some() {
            shown.admin.token = "(set)".into();
        }
        if let Some(inv) = shown.invalidation.as_mut() {
            inv.url = inv.redacted_url();
        }
        print!(
            "{}",
            toml::to_string_pretty(&shown).context("printing the effective config")?
        );
        for warning in check_tls(&config)? {
            eprintln!("warning: {warning}");
        }
        eprintln!("edge config is valid");
        return Ok(());
    }
    init_logging(&config);
    if args.reload {
        return reload(&config, args.config.as_deref());
    }
    raise_nofile(&config)?;
    // With --upgrade this returns once the old process has handed its listeners over.
    let (server, parts) = build(&config, args.upgrade)?;
    let pid_file = PidFile::write(config.shutdown.pid_file.as_ref())?;
    let pid_file = Arc::new(parking_lot::Mutex::new(Some(pid_file)));
    let handed_over = Arc::new(AtomicBool::new(false));
    // The exit work, run once: by the drain watcher when nothing is left in flight, or after
    // Pingora's shutdown when the grace period ran out first.
    let exit_work = {
        let (pid_file, handed_over, cache) =
            (pid_file.clone(), handed_over.clone(), parts.cache.clone());
        let config = config.clone();
        let done = Arc::new(std::sync::Once::new());
        move || {
            done.call_once(|| {
                if !handed_over.load(Ordering::SeqCst) {
                    save_cache(&cache, &config);
                }
                drop(pid_file.lock().take());
            })
        }
    };
    drain::exit_when_drained(
        server.watch_execution_phase(),
        parts.open_connections.clone(),
        config.shutdown.grace_period.get(),
        handed_over,
        exit_work.clone(),
    );
    tracing::info!(listen = %config.listen.address, admin = %config.admin.address, upstreams = config.upstream.servers.len(), "edge starting");
    announce_ready(config.listen.address, args.upgrade);
    server.run(RunArgs::default());
    exit_work();
    Ok(())
}

/// `--check` of the HTTPS listeners: their files exist, parse and match (else an error naming
/// the key and file); warnings for certificates outside their validity dates.
fn check_tls(config: &EdgeConfig) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for t in &config.listen.tls {
        warnings.extend(crate::downstream::tls::check(t)?);
    }
    Ok(warnings)
}

/// `--reload`: hands the running edge's listeners to a new process of the binary on disk.
/// Pingora's upgrade needs the new process waiting on `shutdown.upgrade_sock` (it binds the
/// socket, then waits 5 × 1 s) before the old one gets SIGQUIT; the new process writes the pid
/// file once it holds the listeners, which is how this knows the handover happened.
fn reload(config: &EdgeConfig, config_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let pid_file = &config.shutdown.pid_file;
    let old: i32 = std::fs::read_to_string(pid_file)
        .with_context(|| {
            format!(
                "reading {} (shutdown.pid_file): is an edge running with this config?",
                pid_file
            )
        })?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", pid_file))?;
    let old = Pid::from_raw(old);
    kill(old, None).with_context(|| {
        format!(
            "no edge runs as pid {old} (from {}): nothing to hand over",
            pid_file
        )
    })?;
    // The running edge's cache first, so the new process starts warm (see handover.rs).
    let wait = config.cache.snapshot_timeout.get() + Duration::from_secs(5);
    if handover::request_snapshot(old, config, wait) {
        tracing::info!("the running edge wrote its cache for the new one");
    } else {
        tracing::warn!(
            "the running edge did not write its cache within {wait:?}: the new edge starts cold"
        );
    }
    let sock = &config.shutdown.upgrade_sock;
    // A socket file left by an earlier run would look like the new process is ready.
    let _ = std::fs::remove_file(sock);
    let exe = std::env::current_exe().context("locating the reviews binary")?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("proxy");
    if let Some(path) = config_path {
        cmd.arg("--config").arg(path);
    }
    cmd.arg("--upgrade").stdin(std::process::Stdio::null());
    // Not waited for: it is the edge from now on (systemd follows it by its MAINPID= message).
    let new = cmd
        .spawn()
        .with_context(|| format!("starting {} proxy --upgrade", exe.display()))?;
    let new_pid = new.id();
    let waited = Instant::now();
    // The new process loads the cache before it opens the socket.
    let patience = wait + Duration::from_secs(4);
    while !std::path::Path::new(sock).exists() {
        if waited.elapsed() > patience {
            bail!(
                "the new edge (pid {new_pid}) did not open {sock} (shutdown.upgrade_sock) within \
                 {patience:?}; the running edge was left alone"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(old, Signal::SIGQUIT).with_context(|| format!("sending SIGQUIT to pid {old}"))?;
    let handed = Instant::now();
    loop {
        let now = std::fs::read_to_string(pid_file).unwrap_or_default();
        if now.trim() == new_pid.to_string() {
            break;
        }
        if handed.elapsed() > Duration::from_secs(15) {
            bail!(
                "pid {old} got SIGQUIT but the new edge (pid {new_pid}) has not taken over \
                 within 15 s: check both processes' logs"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(
        old = old.as_raw(),
        new = new_pid,
        "the new edge holds the listeners; the old one drains"
    );
    Ok(())
}

/// Tells a service manager (`$NOTIFY_SOCKET`) that the edge serves. An upgrade already holds
/// the inherited listening sockets, so it says so at once, with `MAINPID=` so that systemd
/// follows this process when the old one exits. A fresh start binds its listeners when the
/// server runs, so a thread waits until the listen address accepts.
fn announce_ready(listen: SocketAddr, upgrade: bool) {
    let pid = std::process::id();
    let send = move || match sd_notify(&format!("MAINPID={pid}\nREADY=1")) {
        Ok(true) => tracing::info!(pid, "told the service manager the edge is ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not notify the service manager"),
    };
    if upgrade {
        send();
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ready-notify".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
                if Instant::now() > deadline {
                    tracing::warn!(%listen, "the edge is not accepting after 60 s; readiness not announced");
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            send();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the readiness thread");
    }
}

/// The shared logging setup, then Pingora's `log` records through the edge's bridge.
pub fn init_logging(config: &EdgeConfig) {
    reviews_shared::logging::init(&config.log);
    logbridge::install(logbridge::max_level_of_tracing());
}

/// Raises RLIMIT_NOFILE to `nofile`, refusing to start when the hard limit can't allow what
/// `max_connections` needs.
fn raise_nofile(config: &EdgeConfig) -> anyhow::Result<()> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).context("reading RLIMIT_NOFILE")?;
    let needed = config.nofile_needed();
    if hard < needed {
        bail!(
            "max_connections = {} needs {needed} file descriptors but the hard RLIMIT_NOFILE is {hard}; \
             lower max_connections or raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn)",
            config.max_connections
        );
    }
    let got = rlimit::increase_nofile_limit(config.nofile()).context("raising RLIMIT_NOFILE")?;
    if got < needed {
        bail!(
            "RLIMIT_NOFILE could only be raised to {got}, below the {needed} that max_connections needs"
        );
    }
    metrics::NOFILE_LIMIT.set(got as i64);
    tracing::info!(nofile = got, "raised RLIMIT_NOFILE");
    Ok(())
}

/// Loads `cache.snapshot_path` when it is set and there (a restart after SIGTERM).
fn load_cache(cache: &Cache, config: &EdgeConfig) {
    let Some(path) = &config.cache.snapshot_path else {
        return;
    };
    if !path.exists() {
        return;
    }
    let started = Instant::now();
    match snapshot::load(cache, path) {
        Ok((_, loaded)) => tracing::info!(
            entries = loaded.entries,
            bytes = loaded.bytes,
            ms = started.elapsed().as_millis() as u64,
            path = %path.display(),
            "cache loaded from the snapshot"
        ),
        Err(e) => tracing::warn!(error = %e, "ignoring the cache snapshot: starting cold"),
    }
}

/// Writes the cache to `cache.snapshot_path` when it is set (a stop that is not an upgrade).
fn save_cache(cache: &Cache, config: &EdgeConfig) {
    let Some(path) = &config.cache.snapshot_path else {
        return;
    };
    let started = Instant::now();
    match snapshot::write(cache, path, config.cache.snapshot_timeout.get()) {
        Ok(w) => tracing::info!(
            entries = w.entries,
            bytes = w.bytes,
            cut_short = w.cut_short,
            ms = started.elapsed().as_millis() as u64,
            path = %path.display(),
            "cache written to the snapshot"
        ),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the cache snapshot")
        }
    }
}

/// The shared state of one edge, for tests and for embedding.
pub struct Parts {
    pub cache: Arc<Cache>,
    pub balancer: Arc<Balancer>,
    pub open_connections: Arc<AtomicUsize>,
}

fn build(config: &EdgeConfig, upgrade: bool) -> anyhow::Result<(Server, Parts)> {
    config.validate()?;
    // Certificates are read from disk by each process, so a reload serves renewed ones; and
    // before an upgrade takes the listeners, so a bad file leaves the running edge serving.
    let tls = crate::downstream::tls::endpoints(&config.listen.tls)?;
    let sessions = crate::downstream::tls::session_stores(&tls);
    metrics::init();
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let shutdown = &config.shutdown;
    let conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        grace_period_seconds: Some(shutdown.grace_period.get().as_secs()),
        graceful_shutdown_timeout_seconds: Some(shutdown.graceful_timeout.get().as_secs()),
        upgrade_sock: shutdown.upgrade_sock.clone(),
        pid_file: shutdown.pid_file.clone(),
        upstream_keepalive_pool_size: config.upstream.keepalive_pool,
        // Tries in all; `Edge` decides which errors are retried.
        max_retries: config.upstream.retries.attempts + 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let shared = Arc::new(config.clone());

    let balancer = Arc::new(Balancer::new(&config.upstream));
    let cache = Arc::new(Cache::new(config.cache.clone(), config.compression.clone()));
    metrics::CACHE_MAX_BYTES.set(config.cache.max_size.bytes() as i64);
    // Before the cache is loaded: a loaded snapshot tells the subscriber where to resume.
    let publish_task = config.invalidation.as_ref().map(|inv| {
        metrics::init_invalidation();
        let (publisher, task) = Publisher::new(
            inv,
            &invalidation::origin_id(),
            PublishMetrics {
                published: metrics::INVALIDATION_PUBLISHED.clone(),
                dropped: metrics::INVALIDATION_DROPPED.clone(),
                connected: metrics::INVALIDATION_PUBLISHER_CONNECTED.clone(),
                confirmations: metrics::INVALIDATION_CONFIRMATIONS.clone(),
                confirm_seconds: metrics::INVALIDATION_CONFIRM_SECONDS.clone(),
            },
        );
        cache.invalidation.set_publisher(publisher);
        task
    });
    // The cache is filled before the listeners are taken (an upgrade's bootstrap receives
    // them): the edge never serves from a cold cache it could have had warm.
    if upgrade {
        handover::take_over(&cache, config, &sessions);
    } else {
        handover::remove_stale_sessions(config);
        load_cache(&cache, config);
    }
    server.bootstrap();

    let edge = Edge::new(shared.clone(), balancer.clone(), cache.clone());
    // The proxy runs inside `Downstream`, which adds the connection limit and the header
    // deadlines Pingora's own listener loop lacks.
    let hits = edge.hit_path();
    let proxy = pingora_proxy::http_proxy(&server.configuration, edge);
    let downstream = Downstream::new(proxy, hits, config, tls);
    let open_connections = downstream.open_connections();
    let mut front = Service::new("reviews edge".into(), downstream);
    let buffers = L4BufferSettings::new(
        config.listen.read_buffer.bytes() as usize,
        config.listen.write_buffer.bytes() as usize,
    );
    front.add_listener(ListenerConfig::tcp(config.listen.address.to_string()).l4_buffer(buffers));
    // HTTPS listeners are plain TCP to Pingora: `Downstream` does the handshake itself.
    for t in &config.listen.tls {
        front.add_listener(ListenerConfig::tcp(t.address.to_string()).l4_buffer(buffers));
    }
    server.add_service(front);

    let admin = Admin {
        cache: cache.clone(),
        balancer: balancer.clone(),
        token: config.admin.token().map(str::to_owned),
    };
    let mut admin = Service::new("reviews edge admin".into(), HttpServer::new_app(admin));
    admin.threads = Some(1);
    admin.add_tcp(&config.admin.address.to_string());
    server.add_service(admin);

    server.add_service(background_service(
        "cache handover",
        handover::OnRequest {
            cache: cache.clone(),
            config: shared.clone(),
            sessions,
        },
    ));

    if let (Some(inv), Some(task)) = (&config.invalidation, publish_task) {
        server.add_service(background_service(
            "purge publisher",
            crate::invalidation::PublishService {
                task: parking_lot::Mutex::new(Some(task)),
            },
        ));
        server.add_service(background_service(
            "purge subscriber",
            crate::invalidation::subscriber::Subscriber {
                cache: cache.clone(),
                config: inv.clone(),
            },
        ));
    }

    let health = background_service(
        "health checks",
        HealthChecker::new(balancer.clone(), config.upstream.health.clone()),
    );
    server.add_service(health);
    Ok((
        server,
        Parts {
            cache,
            balancer,
            open_connections,
        },
    ))
}

struct ChannelSignal(parking_lot::Mutex<Option<oneshot::Receiver<ShutdownSignal>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().take();
        match rx {
            Some(rx) => rx.await.unwrap_or(ShutdownSignal::FastShutdown),
            None => std::future::pending().await,
        }
    }
}

/// An edge running on its own thread (see [`start`]).
pub struct RunningEdge {
    pub listen: SocketAddr,
    /// The `[[listen.tls]]` addresses, in order.
    pub tls: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub cache: Arc<Cache>,
    pub balancer: Arc<Balancer>,
    stop: Option<oneshot::Sender<ShutdownSignal>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningEdge {
    /// SIGTERM-like: stop accepting, let in-flight requests finish within the grace period.
    pub fn shutdown_gracefully(mut self) {
        self.stop_with(ShutdownSignal::GracefulTerminate);
    }

    fn stop_with(&mut self, signal: ShutdownSignal) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(signal);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        self.stop_with(ShutdownSignal::FastShutdown);
    }
}

/// A free port on `ip`, found by binding port 0 and letting it go. Pingora does not report
/// the port it bound, so a listener asking for port 0 gets one chosen this way.
fn free_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l =
        TcpListener::bind(addr).with_context(|| format!("finding a free port on {}", addr.ip()))?;
    Ok(l.local_addr()?)
}

/// Starts the edge on a background thread and returns once both listeners accept.
/// Ports 0 are replaced by free ones; the upgrade socket and pid file get unique paths
/// unless set. Dropping the handle shuts the edge down.
pub fn start(mut config: EdgeConfig) -> anyhow::Result<RunningEdge> {
    static INSTANCE: AtomicU32 = AtomicU32::new(0);
    config.listen.address = free_port(config.listen.address)?;
    config.admin.address = free_port(config.admin.address)?;
    for t in &mut config.listen.tls {
        t.address = free_port(t.address)?;
    }
    let defaults = EdgeConfig::default();
    let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
    let unique = |base: &str| format!("{}-{}-{n}", base, std::process::id());
    if config.shutdown.upgrade_sock == defaults.shutdown.upgrade_sock {
        config.shutdown.upgrade_sock = unique("/tmp/reviews-edge-upgrade") + ".sock";
    }
    if config.shutdown.pid_file == defaults.shutdown.pid_file {
        config.shutdown.pid_file = unique("/tmp/reviews-edge") + ".pid";
    }
    let (server, parts) = build(&config, false)?;
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("edge-{n}"))
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(ChannelSignal(parking_lot::Mutex::new(Some(rx)))),
            })
        })
        .context("spawning the edge thread")?;
    let edge = RunningEdge {
        listen: config.listen.address,
        tls: config.listen.tls.iter().map(|t| t.address).collect(),
        admin: config.admin.address,
        cache: parts.cache,
        balancer: parts.balancer,
        stop: Some(tx),
        thread: Some(thread),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for &addr in [edge.listen, edge.admin].iter().chain(&edge.tls) {
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("the edge did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(edge)
}

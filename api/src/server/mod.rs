//! Starting and stopping an API process: bind both listeners, serve until told to stop, then
//! let in-flight requests finish within the grace period. Each listener runs the accept loop
//! of `listener.rs`: HTTP/1.1 with a header-read deadline, a keep-alive idle timeout and a cap
//! on open connections (`server.*` in the config).

mod deadlines;
mod listener;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::listener::ConnectionLimits;
use crate::config::ApiConfig;
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::store;

/// A running API process (or an in-process one in tests).
pub struct RunningApi {
    /// The bound public address (the real port when the config said 0).
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    grace: std::time::Duration,
}

/// Opens the database, runs migrations, binds the listeners and starts serving.
pub async fn start(config: &ApiConfig) -> anyhow::Result<RunningApi> {
    let store = store::open(&config.database.url, &config.database.limits()).await?;
    let warming = store.clone();
    tokio::spawn(async move { warming.warm().await });
    let metrics = Arc::new(Metrics::new());
    metrics.watch_store(store.clone());
    let mut state = AppState::new(
        store.clone(),
        metrics.clone(),
        config.http.cache_max_age.get().as_secs(),
    );
    if let Some(inv) = &config.invalidation {
        let (publisher, task) = reviews_shared::invalidation::Publisher::new(
            inv,
            &reviews_shared::invalidation::origin_id(),
            metrics.publish_metrics(),
        );
        // Ends when the router (and so the last publisher handle) is dropped.
        tokio::spawn(task.run());
        tracing::info!(url = %inv.redacted_url(), stream = %inv.stream, "publishing write purges");
        state = state.with_publisher(publisher);
    }

    let public = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on server.listen = {}", config.server.listen))?;
    let internal = TcpListener::bind(config.server.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on server.metrics_listen = {}",
                config.server.metrics_listen
            )
        })?;
    let addr = public.local_addr()?;
    let metrics_addr = internal.local_addr()?;

    let (stop, stopped) = watch::channel(false);
    let limits = ConnectionLimits {
        header_read_timeout: config.server.header_read_timeout.get(),
        keepalive_timeout: config.server.keepalive_timeout.get(),
        max_connections: config.server.max_connections,
    };
    let serve = |listener: TcpListener, app: axum::Router, name: &'static str| {
        tokio::spawn(listener::serve(
            listener,
            app,
            limits,
            metrics.connection_metrics(name),
            stopped.clone(),
        ))
    };
    let tasks = vec![
        serve(public, router(state), "public"),
        serve(internal, crate::metrics::router(metrics.clone()), "metrics"),
    ];
    tracing::info!(%addr, %metrics_addr, backend = store.backend(), "reviews API listening");
    Ok(RunningApi {
        addr,
        metrics_addr,
        stop,
        tasks,
        grace: config.server.shutdown_grace.get(),
    })
}

impl RunningApi {
    /// Stops accepting, waits up to the grace period for in-flight requests, then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(self.grace, all).await.is_err() {
            tracing::warn!(grace = ?self.grace, "in-flight requests outlived the grace period");
        }
    }
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully. `reviews api` runs this.
pub async fn run(config: ApiConfig) -> anyhow::Result<()> {
    let running = start(&config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what systemd sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

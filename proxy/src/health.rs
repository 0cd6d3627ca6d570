//! Active health checks: every `interval`, an HTTP `GET <path>` (default `/readyz`) to each
//! backend with Pingora's [`HttpHealthCheck`]; `fall` consecutive failures take a backend
//! out, `rise` consecutive passes bring it back. Runs as a Pingora background service, so it
//! stops with the server.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use pingora_load_balancing::Backend as PingoraBackend;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};

use crate::balancer::Balancer;
use crate::config::HealthConfig;

pub struct HealthChecker {
    balancer: Arc<Balancer>,
    config: HealthConfig,
    check: HttpHealthCheck,
}

impl HealthChecker {
    pub fn new(balancer: Arc<Balancer>, config: HealthConfig) -> Self {
        let mut check = HttpHealthCheck::new("reviews-edge", false);
        let mut req =
            RequestHeader::build("GET", config.path.as_bytes(), None).expect("a valid health path");
        req.append_header("Host", "reviews-edge")
            .expect("static header");
        req.append_header("User-Agent", "reviews-edge-health")
            .expect("static header");
        check.req = req;
        let timeout = Some(config.timeout.get());
        check.peer_template.options.connection_timeout = timeout;
        check.peer_template.options.read_timeout = timeout;
        check.peer_template.options.write_timeout = timeout;
        HealthChecker {
            balancer,
            config,
            check,
        }
    }

    async fn check_all(&self, streaks: &mut [(u32, u32)]) {
        let checks = self.balancer.backends().iter().map(|b| async move {
            let target = PingoraBackend::new(&b.addr.to_string());
            match target {
                Ok(t) => matches!(
                    tokio::time::timeout(self.config.timeout.get(), self.check.check(&t)).await,
                    Ok(Ok(()))
                ),
                Err(_) => false,
            }
        });
        let results = futures::future::join_all(checks).await;
        for ((b, ok), (passes, fails)) in self
            .balancer
            .backends()
            .iter()
            .zip(results)
            .zip(streaks.iter_mut())
        {
            if ok {
                *passes += 1;
                *fails = 0;
                if !b.is_healthy() && *passes >= self.config.rise {
                    self.balancer.set_healthy(b, true);
                }
            } else {
                *fails += 1;
                *passes = 0;
                if b.is_healthy() && *fails >= self.config.fall {
                    self.balancer.set_healthy(b, false);
                }
            }
            self.balancer.refresh_gauge(b);
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if !self.config.enabled {
            return;
        }
        let mut streaks = vec![(0u32, 0u32); self.balancer.backends().len()];
        let mut tick = tokio::time::interval(self.config.interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.check_all(&mut streaks).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

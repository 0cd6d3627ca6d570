//! What the cache really costs in memory against what it counts (`edge_cache_bytes`):
//! fills a cache of `--max-size` with `--entries` responses of `--body` bytes through the same
//! `build_entry` and `store` a fill uses (so it churns through evictions when the entries do
//! not fit), from `--threads` threads as the proxy's workers would, then compares the growth
//! of the process's resident memory with `max_size`.
//!
//! ```sh
//! cargo run --release -p reviews-proxy --example cache_memory -- --max-size 64MiB --body 200 --entries 300000
//! cargo run --release -p reviews-proxy --example cache_memory -- --max-size 64MiB --body 2400 --entries 100000
//! ```

#[global_allocator]
static ALLOCATOR: reviews_proxy::Allocator = reviews_proxy::Allocator {};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora_http::ResponseHeader;
use reviews_proxy::cache::policy::Lifetime;
use reviews_proxy::cache::{self, Cache};
use reviews_proxy::config::{CacheConfig, CompressionConfig};
use reviews_shared::units::ByteSize;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let max_size: ByteSize = arg("--max-size", ByteSize(64 << 20));
    let body_len: usize = arg("--body", 200);
    let entries: u64 = arg("--entries", 300_000);
    let threads: u64 = arg("--threads", 2);

    let config = CacheConfig {
        max_size,
        ..CacheConfig::default()
    };
    let compression = CompressionConfig::default();
    let cache = Arc::new(Cache::new(config, compression.clone()));
    let before = rss_bytes();

    let per_thread = entries / threads;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (cache, compression) = (cache.clone(), compression.clone());
            std::thread::spawn(move || {
                for i in t * per_thread..(t + 1) * per_thread {
                    // The headers the API sends with a page, as they arrive from upstream.
                    let mut h = ResponseHeader::build(200, Some(8)).unwrap();
                    h.append_header("content-type", "application/json").unwrap();
                    h.append_header("cache-control", "public, max-age=60")
                        .unwrap();
                    h.append_header("surrogate-key", format!("product-{i}"))
                        .unwrap();
                    h.append_header("content-length", body_len.to_string())
                        .unwrap();
                    h.append_header("date", "Wed, 02 Dec 2026 05:00:00 GMT")
                        .unwrap();
                    let key: Arc<str> = format!("GET /reviews?product_id={i}").into();
                    let body = Bytes::from(vec![b'x'; body_len]);
                    let entry = cache::build_entry(
                        key.len(),
                        &h,
                        body,
                        Lifetime {
                            fresh: Duration::from_secs(3600),
                            stale_while_revalidate: Duration::ZERO,
                            stale_if_error: Duration::ZERO,
                        },
                        cache::surrogate_keys(&h),
                        cache.fill_started(),
                        &compression,
                    );
                    cache.store(key, entry);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    cache.sync();
    let grew = rss_bytes().saturating_sub(before);
    let counted = cache.weighted_size();
    let n = cache.entry_count();
    println!(
        "body {body_len} B, {entries} stored from {threads} threads into max_size {max_size}: \
         {n} entries held, counted {:.1} MiB ({} B/entry), RSS grew {:.1} MiB ({} B/entry): \
         RSS / max_size = {:.2}",
        counted as f64 / (1 << 20) as f64,
        counted / n.max(1),
        grew as f64 / (1 << 20) as f64,
        grew / n.max(1),
        grew as f64 / max_size.bytes() as f64,
    );
}

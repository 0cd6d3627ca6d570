//! Whether a response may be stored and for how long, from the origin's headers
//! (RFC 9111 for a shared cache): `no-store`, `private` and `no-cache` forbid storing,
//! `s-maxage` wins over `max-age`, which wins over the route's or the default TTL; a
//! `Set-Cookie` response is never stored; RFC 5861 `stale-while-revalidate` and
//! `stale-if-error` from the origin override the configured windows.

use std::time::Duration;

use http::{HeaderMap, header};

/// Freshness and stale windows for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub fresh: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Store(Lifetime),
    /// Why not, for logs and tests.
    Skip(&'static str),
}

#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    no_store: bool,
    private: bool,
    no_cache: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    swr: Option<u64>,
    sie: Option<u64>,
}

fn parse_cache_control(headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let secs = || arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "private" => cc.private = true,
                "no-cache" => cc.no_cache = true,
                // A malformed max-age makes the response stale (RFC 9111 §4.2.1).
                "max-age" => cc.max_age = Some(secs().unwrap_or(0)),
                "s-maxage" => cc.s_maxage = Some(secs().unwrap_or(0)),
                "stale-while-revalidate" => cc.swr = secs(),
                "stale-if-error" => cc.sie = secs(),
                _ => {}
            }
        }
    }
    cc
}

/// The representation may differ only by `Accept-Encoding`, which the edge handles itself;
/// any other `Vary` makes the response unsafe to share.
fn vary_is_supported(headers: &HeaderMap) -> bool {
    headers.get_all(header::VARY).iter().all(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .all(|f| f.is_empty() || f.eq_ignore_ascii_case("accept-encoding"))
        })
    })
}

/// `ttl` is the route's or the default freshness used when the origin gives none.
pub fn decide(
    status: u16,
    headers: &HeaderMap,
    ttl: Duration,
    swr: Duration,
    sie: Duration,
) -> Decision {
    if status != 200 {
        return Decision::Skip("status is not 200");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Decision::Skip("Set-Cookie");
    }
    if !vary_is_supported(headers) {
        return Decision::Skip("Vary on a header other than Accept-Encoding");
    }
    let cc = parse_cache_control(headers);
    if cc.no_store {
        return Decision::Skip("no-store");
    }
    if cc.private {
        return Decision::Skip("private");
    }
    if cc.no_cache {
        return Decision::Skip("no-cache");
    }
    let fresh = match cc.s_maxage.or(cc.max_age) {
        Some(s) => Duration::from_secs(s),
        None => ttl,
    };
    if fresh.is_zero() {
        return Decision::Skip("zero freshness");
    }
    Decision::Store(Lifetime {
        fresh,
        stale_while_revalidate: cc.swr.map_or(swr, Duration::from_secs),
        stale_if_error: cc.sie.map_or(sie, Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TTL: Duration = Duration::from_secs(60);
    const W: Duration = Duration::from_secs(10);

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn fresh(d: Decision) -> Option<u64> {
        match d {
            Decision::Store(l) => Some(l.fresh.as_secs()),
            Decision::Skip(_) => None,
        }
    }

    #[test]
    fn s_maxage_wins_over_max_age_which_wins_over_the_default() {
        let h = headers(&[("cache-control", "public, max-age=30, s-maxage=90")]);
        assert_eq!(fresh(decide(200, &h, TTL, W, W)), Some(90));
        let h = headers(&[("cache-control", "public, max-age=30")]);
        assert_eq!(fresh(decide(200, &h, TTL, W, W)), Some(30));
        assert_eq!(fresh(decide(200, &HeaderMap::new(), TTL, W, W)), Some(60));
    }

    #[test]
    fn no_store_private_no_cache_and_set_cookie_are_never_stored() {
        for cc in ["no-store", "private, max-age=60", "no-cache", "max-age=0"] {
            let h = headers(&[("cache-control", cc)]);
            assert_eq!(fresh(decide(200, &h, TTL, W, W)), None, "{cc}");
        }
        let h = headers(&[("set-cookie", "a=b")]);
        assert_eq!(fresh(decide(200, &h, TTL, W, W)), None);
    }

    #[test]
    fn only_200_is_stored() {
        for status in [201, 204, 301, 404, 500, 503] {
            assert_eq!(
                fresh(decide(status, &HeaderMap::new(), TTL, W, W)),
                None,
                "{status}"
            );
        }
    }

    #[test]
    fn vary_other_than_accept_encoding_is_not_stored() {
        let h = headers(&[("vary", "Accept-Encoding")]);
        assert!(fresh(decide(200, &h, TTL, W, W)).is_some());
        let h = headers(&[("vary", "Accept-Encoding, Cookie")]);
        assert!(fresh(decide(200, &h, TTL, W, W)).is_none());
    }

    #[test]
    fn origin_stale_windows_override_the_config() {
        let h = headers(&[(
            "cache-control",
            "max-age=5, stale-while-revalidate=7, stale-if-error=9",
        )]);
        let Decision::Store(l) = decide(200, &h, TTL, W, W) else {
            panic!()
        };
        assert_eq!(l.stale_while_revalidate.as_secs(), 7);
        assert_eq!(l.stale_if_error.as_secs(), 9);
    }
}

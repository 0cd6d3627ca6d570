//! What the backends are told about the client: `X-Forwarded-For` (its address) and
//! `X-Forwarded-Proto` (`http` or `https`). A client can send these headers itself, and the
//! API would believe them; so they are passed on, and `X-Forwarded-For` appended to, only
//! when the connection comes from one of `forwarded.trusted_proxies` (a load balancer in front
//! of the edge). From anyone else the client's copies, and `Forwarded`, are dropped and the
//! edge writes its own.

use std::net::IpAddr;

use http::header::FORWARDED;
use pingora_error::Result;
use pingora_http::RequestHeader;

use crate::config::ForwardedConfig;
use crate::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO};

/// Rewrites the forwarding headers of a request going to a backend. `peer`: the address the
/// connection came from; `tls`: whether it came over TLS.
pub fn apply(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    tls: bool,
    config: &ForwardedConfig,
) -> Result<()> {
    let trusted = peer.is_some_and(|p| config.trusts(p));
    if !trusted {
        req.remove_header(X_FORWARDED_FOR);
        req.remove_header(X_FORWARDED_PROTO);
        req.remove_header(&FORWARDED);
    }
    if config.x_forwarded_for
        && let Some(ip) = peer
    {
        let ip = ip.to_canonical().to_string();
        let xff = match req
            .headers
            .get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip,
        };
        req.insert_header(X_FORWARDED_FOR, xff)?;
    }
    if config.x_forwarded_proto && !req.headers.contains_key(X_FORWARDED_PROTO) {
        req.insert_header(X_FORWARDED_PROTO, if tls { "https" } else { "http" })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn header(r: &RequestHeader, name: &str) -> Option<String> {
        r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }

    fn config(trusted: &[&str]) -> ForwardedConfig {
        ForwardedConfig {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..ForwardedConfig::default()
        }
    }

    #[test]
    fn a_clients_own_forwarding_headers_are_replaced() {
        let mut r = request(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        apply(
            &mut r,
            Some("192.0.2.7".parse().unwrap()),
            false,
            &config(&[]),
        )
        .unwrap();
        assert_eq!(header(&r, "x-forwarded-for").as_deref(), Some("192.0.2.7"));
        assert_eq!(header(&r, "x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(header(&r, "forwarded"), None);
    }

    #[test]
    fn a_trusted_proxys_headers_are_kept_and_appended_to() {
        let mut r = request(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer = Some("10.0.3.4".parse().unwrap());
        apply(&mut r, peer, false, &config(&["10.0.0.0/8"])).unwrap();
        assert_eq!(
            header(&r, "x-forwarded-for").as_deref(),
            Some("203.0.113.9, 10.0.3.4")
        );
        assert_eq!(header(&r, "x-forwarded-proto").as_deref(), Some("https"));
    }

    #[test]
    fn tls_clients_are_forwarded_as_https() {
        let mut r = request(&[]);
        apply(&mut r, Some("::1".parse().unwrap()), true, &config(&[])).unwrap();
        assert_eq!(header(&r, "x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(header(&r, "x-forwarded-for").as_deref(), Some("::1"));
    }

    #[test]
    fn switched_off_headers_are_not_written_and_untrusted_copies_still_dropped() {
        let mut c = config(&[]);
        c.x_forwarded_for = false;
        c.x_forwarded_proto = false;
        let mut r = request(&[("x-forwarded-for", "6.6.6.6")]);
        apply(&mut r, Some("192.0.2.7".parse().unwrap()), true, &c).unwrap();
        assert_eq!(header(&r, "x-forwarded-for"), None);
        assert_eq!(header(&r, "x-forwarded-proto"), None);
    }
}

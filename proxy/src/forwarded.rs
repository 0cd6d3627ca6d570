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

/// [`apply`]'s rules for a request built field by field (the fast miss path copies the
/// client's fields one at a time): [`Rewrite::keep`] says whether a client field goes on,
/// [`Rewrite::finish`] appends the edge's own. Removing fields from a built header map and
/// inserting into it again was a tenth of a miss's instructions.
pub struct Rewrite<'a> {
    config: &'a ForwardedConfig,
    peer: Option<IpAddr>,
    tls: bool,
    trusted: bool,
    /// A trusted proxy's `X-Forwarded-For`, to append to.
    prior: Option<&'a [u8]>,
    /// A trusted proxy's `X-Forwarded-Proto` went on as it came.
    has_proto: bool,
}

impl<'a> Rewrite<'a> {
    pub fn new(config: &'a ForwardedConfig, peer: Option<IpAddr>, tls: bool) -> Self {
        Rewrite {
            config,
            peer,
            tls,
            trusted: peer.is_some_and(|p| config.trusts(p)),
            prior: None,
            has_proto: false,
        }
    }

    /// Whether the client's field `name: value` is passed on as it is.
    pub fn keep(&mut self, name: &str, value: &'a [u8]) -> bool {
        if name.eq_ignore_ascii_case(X_FORWARDED_FOR) {
            if self.trusted && self.config.x_forwarded_for && self.peer.is_some() {
                // Replaced by the first value with the peer appended, as `apply` does.
                self.prior = self.prior.or(Some(value));
                return false;
            }
            return self.trusted;
        }
        if name.eq_ignore_ascii_case(X_FORWARDED_PROTO) {
            self.has_proto |= self.trusted;
            return self.trusted;
        }
        if name.eq_ignore_ascii_case(FORWARDED.as_str()) {
            return self.trusted;
        }
        true
    }

    /// Appends the edge's forwarding fields.
    pub fn finish(self, req: &mut RequestHeader) -> Result<()> {
        if self.config.x_forwarded_for
            && let Some(ip) = self.peer
        {
            let ip = ip.to_canonical().to_string();
            let prior = self
                .prior
                .and_then(|v| http::HeaderValue::from_bytes(v).ok())
                .and_then(|v| v.to_str().ok().map(str::to_owned));
            let xff = match prior {
                Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
                _ => ip,
            };
            req.append_header(X_FORWARDED_FOR, xff)?;
        }
        if self.config.x_forwarded_proto && !self.has_proto {
            req.append_header(X_FORWARDED_PROTO, if self.tls { "https" } else { "http" })?;
        }
        Ok(())
    }
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

    /// `Rewrite` and `apply` send the backend the same fields, for every mix of trusted and
    /// untrusted peers, switched-off headers and client copies.
    #[test]
    fn the_field_by_field_rewrite_matches_apply() {
        let client_fields: [&[(&str, &str)]; 5] = [
            &[],
            &[("x-forwarded-for", "6.6.6.6"), ("accept", "*/*")],
            &[
                ("X-Forwarded-For", "203.0.113.9"),
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=6.6.6.6"),
            ],
            &[("x-forwarded-for", " "), ("x-forwarded-proto", "http")],
            &[("forwarded", "for=1.2.3.4;proto=https"), ("x-custom", "1")],
        ];
        let peers = [
            None,
            Some("10.0.3.4"),
            Some("192.0.2.7"),
            Some("::ffff:10.1.1.1"),
        ];
        for fields in client_fields {
            for peer in peers {
                for tls in [false, true] {
                    for (xff, proto) in [(true, true), (false, true), (true, false)] {
                        let mut c = config(&["10.0.0.0/8"]);
                        c.x_forwarded_for = xff;
                        c.x_forwarded_proto = proto;
                        let peer: Option<IpAddr> = peer.map(|p| p.parse().unwrap());
                        let mut expected = request(fields);
                        apply(&mut expected, peer, tls, &c).unwrap();
                        let mut got = RequestHeader::build("GET", b"/", None).unwrap();
                        let mut rw = Rewrite::new(&c, peer, tls);
                        for (k, v) in fields {
                            if rw.keep(k, v.as_bytes()) {
                                got.append_header(k.to_string(), *v).unwrap();
                            }
                        }
                        rw.finish(&mut got).unwrap();
                        let sorted = |r: &RequestHeader| {
                            let mut v: Vec<String> = r
                                .headers
                                .iter()
                                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                                .collect();
                            v.sort();
                            v
                        };
                        assert_eq!(
                            sorted(&got),
                            sorted(&expected),
                            "{fields:?} {peer:?} tls={tls} xff={xff} proto={proto}"
                        );
                    }
                }
            }
        }
    }
}

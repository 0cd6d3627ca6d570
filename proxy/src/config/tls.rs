//! `[[listen.tls]]`, `[h2]` and `[forwarded]`: the HTTPS listeners, the limits of HTTP/2
//! clients and what the edge tells the API about the client.
//!
//! The files are only named here; `crate::downstream::tls` reads them (at start, so a reload
//! picks up a renewed certificate) and `--check` reports what is wrong with them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use reviews_shared::units::ByteSize;
use serde::{Deserialize, Serialize};

use super::{EdgeConfigError, invalid};

/// One HTTPS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Port 0 picks a free port (see [`crate::start`]).
    pub address: SocketAddr,
    /// The certificate chain, PEM: the server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Lowest protocol version offered: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Application protocols offered, in order of preference: "h2" and/or "http/1.1".
    #[serde(default = "default_alpn")]
    pub alpn: Vec<Alpn>,
    /// TLS sessions remembered for resumption (session ids in TLS 1.2, tickets in 1.3), the
    /// oldest dropped first; 0 = none, every handshake is a full one. A returning client
    /// with a session skips the certificate and its signature. A few hundred bytes each; NGINX's
    /// `ssl_session_cache shared:SSL:10m` holds about 40,000.
    #[serde(default = "default_session_cache")]
    pub session_cache: u32,
    /// TLS 1.3 tickets handed to a client per handshake; each resumes one later connection
    /// and is used up by it (a resumed handshake hands out new ones), so one keeps a client
    /// that reconnects resuming, and each more lets it open one more connection in parallel
    /// with a resumed handshake. Each takes a place in `session_cache` and costs the client
    /// work to store: at two, a benchmark client reconnecting for every request managed 6–8%
    /// fewer connections per second than at one (proxy README). 0 = no TLS 1.3 resumption.
    #[serde(default = "default_session_tickets")]
    pub session_tickets: u8,
}

fn default_alpn() -> Vec<Alpn> {
    vec![Alpn::H2, Alpn::Http11]
}

fn default_session_cache() -> u32 {
    32_768
}

fn default_session_tickets() -> u8 {
    1
}

/// `listen.tls.session_tickets` at most (OpenSSL sends two, rustls two, BoringSSL two).
const SESSION_TICKETS_MAX: u8 = 8;

/// `listen.tls.session_cache` at most (about 1 GiB of sessions).
const SESSION_CACHE_MAX: u32 = 4 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Alpn {
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "http/1.1")]
    Http11,
}

impl Alpn {
    pub fn wire(self) -> &'static [u8] {
        match self {
            Alpn::H2 => b"h2",
            Alpn::Http11 => b"http/1.1",
        }
    }
}

impl TlsListenerConfig {
    pub(super) fn validate(&self) -> Result<(), EdgeConfigError> {
        if self.alpn.is_empty() {
            return Err(invalid(
                "listen.tls.alpn",
                "[]",
                "name at least one of \"h2\", \"http/1.1\"",
            ));
        }
        if self.session_cache > SESSION_CACHE_MAX {
            return Err(invalid(
                "listen.tls.session_cache",
                self.session_cache,
                format!("at most {SESSION_CACHE_MAX} sessions (about 300 bytes each)"),
            ));
        }
        if self.session_tickets > SESSION_TICKETS_MAX {
            return Err(invalid(
                "listen.tls.session_tickets",
                self.session_tickets,
                format!("at most {SESSION_TICKETS_MAX} tickets per handshake"),
            ));
        }
        for (key, path) in [
            ("listen.tls.cert", &self.cert),
            ("listen.tls.key", &self.key),
        ] {
            if path.as_os_str().is_empty() {
                return Err(invalid(key, "\"\"", "a PEM file path is required"));
            }
        }
        Ok(())
    }
}

/// What an HTTP/2 client may ask of one connection. Each stream is one request; the limits
/// bound the work a single connection can cause (CVE-2023-44487 "rapid reset",
/// CVE-2025-8671 "MadeYouReset").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct H2Config {
    /// Streams open at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS). The edge also
    /// refuses a new stream while this many of the connection's requests are still being
    /// handled, even if the client reset them.
    pub max_concurrent_streams: u32,
    /// Largest decoded request header list (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list_size: ByteSize,
    /// Resets per connection before it is closed with GOAWAY (ENHANCE_YOUR_CALM): streams the
    /// edge refused or reset for a client error, over the connection's life, and streams the
    /// client reset before the edge took them, at any one time.
    pub max_resets: u32,
    /// Requests per connection, then GOAWAY and the client opens a new one (NGINX:
    /// keepalive_requests, 1000); 0 = no limit.
    pub max_requests: u32,
}

impl Default for H2Config {
    fn default() -> Self {
        H2Config {
            max_concurrent_streams: 100,
            max_header_list_size: ByteSize(32 << 10),
            max_resets: 100,
            max_requests: 10_000,
        }
    }
}

impl H2Config {
    pub(super) fn validate(&self) -> Result<(), EdgeConfigError> {
        if self.max_concurrent_streams == 0 {
            return Err(invalid(
                "h2.max_concurrent_streams",
                0,
                "must be at least 1",
            ));
        }
        let size = self.max_header_list_size.bytes();
        if !(1024..=u64::from(u32::MAX)).contains(&size) {
            return Err(invalid(
                "h2.max_header_list_size",
                self.max_header_list_size,
                "must be between 1KiB and 4GiB",
            ));
        }
        if self.max_resets == 0 {
            return Err(invalid("h2.max_resets", 0, "must be at least 1"));
        }
        Ok(())
    }
}

/// `X-Forwarded-For` / `X-Forwarded-Proto` to the backends. A client's own copy is kept (and
/// appended to) only when the connection comes from a trusted proxy; from anyone else it is
/// replaced, so a client cannot choose the address the API sees.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardedConfig {
    /// Send `X-Forwarded-For: <client address>`.
    pub x_forwarded_for: bool,
    /// Send `X-Forwarded-Proto: http|https`.
    pub x_forwarded_proto: bool,
    /// Peers (addresses or CIDR blocks: "10.0.0.0/8", "::1") whose `X-Forwarded-*` and
    /// `Forwarded` headers are passed on; everyone else's are dropped.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ForwardedConfig {
    fn default() -> Self {
        ForwardedConfig {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ForwardedConfig {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(peer))
    }
}

/// An address block, `"10.0.0.0/8"`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("expected an address or a CIDR block like \"10.0.0.0/8\", got {s:?}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(err)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_cidr_block_holds_its_addresses_only() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
    }

    #[test]
    fn a_bad_block_is_rejected() {
        for bad in ["10.0.0.0/33", "10.0.0/8", "example.com", "::1/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }
}

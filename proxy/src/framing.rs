//! Requests whose meaning depends on who reads them are refused before anything else looks at
//! them (RFC 9112 section 6, and what NGINX and HAProxy do). A proxy that forwards an
//! ambiguous request lets the client and the backend disagree on where it ends: request
//! smuggling.
//!
//! Pingora already refuses unparseable headers, `Transfer-Encoding` on HTTP/1.0 and
//! `Content-Length` values that disagree, and drops `Content-Length` when `Transfer-Encoding`
//! is present (closing the connection after the answer). On top of that the edge refuses:
//!
//! | request | answer |
//! |---|---|
//! | HTTP/1.1 without `Host`, or with more than one | 400 |
//! | `Transfer-Encoding` other than exactly `chunked` (`gzip, chunked`, `identity`, …) | 501 |
//! | `Transfer-Encoding: chunked, chunked`, or on two lines | 400 |
//! | `Content-Length` repeated (even with equal values), a list, or not a number | 400 |
//! | `Content-Length` and `Transfer-Encoding` together (Pingora would drop the length) | 400 |
//! | a request target that is not `/…`, `http(s)://…` or `*` (Pingora percent-escapes a bad request line, so `GET  /x` arrives as `%20/x`) | 400 |
//! | a path holding a control character, raw (which Pingora escapes) or percent-encoded | 400 |
//!
//! Every refusal closes the connection: what follows the header cannot be trusted.

use http::Version;
use pingora_http::RequestHeader;

use crate::headers::Scan;

/// Why a request is refused, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// The `edge_rejected_total` reason.
    pub reason: &'static str,
    /// The body the client gets.
    pub message: &'static str,
}

const fn bad(message: &'static str) -> Refusal {
    Refusal {
        status: 400,
        reason: "bad_request",
        message,
    }
}

/// Checks a request's framing headers (read by `scan`); `Err` says how to refuse it. `raw`
/// is the header block as received: Pingora removes `Content-Length` from the parsed header
/// when `Transfer-Encoding` is present, so only the raw bytes still show that both were sent.
pub fn check(req: &RequestHeader, scan: &Scan, raw: Option<&[u8]>) -> Result<(), Refusal> {
    check_target(req)?;
    if scan.hosts > 1 {
        return Err(bad("more than one Host header\n"));
    }
    if scan.hosts == 0 && req.version == Version::HTTP_11 {
        return Err(bad("HTTP/1.1 request without a Host header\n"));
    }
    if let Some(first) = scan.transfer_encoding {
        if scan.transfer_encodings > 1 {
            return Err(bad("Transfer-Encoding given more than once\n"));
        }
        if raw.is_some_and(names_content_length) {
            return Err(bad("Content-Length and Transfer-Encoding together\n"));
        }
        let text = first.to_str().unwrap_or("");
        let mut names = text.split(',').map(str::trim);
        let chunked = |n: &str| n.eq_ignore_ascii_case("chunked");
        match (names.next(), names.next()) {
            (Some(n), None) if chunked(n) => {}
            _ if text.split(',').filter(|n| chunked(n.trim())).count() > 1 => {
                return Err(bad("chunked applied more than once\n"));
            }
            _ => {
                return Err(Refusal {
                    status: 501,
                    reason: "not_implemented",
                    message: "only Transfer-Encoding: chunked is supported\n",
                });
            }
        }
    }
    if let Some(first) = scan.content_length {
        let plain = first.as_bytes();
        if scan.content_lengths > 1 || plain.is_empty() || !plain.iter().all(u8::is_ascii_digit) {
            return Err(bad("Content-Length must be given once, as a number\n"));
        }
    }
    Ok(())
}

/// The request target: origin form (`/path?query`), absolute form, or `*`; no control
/// characters in the path, escaped or not. NGINX answers 400 to the raw bytes; Pingora
/// instead percent-escapes them, which this sees as `%00`–`%1F` and `%7F`.
fn check_target(req: &RequestHeader) -> Result<(), Refusal> {
    // The target as sent: Pingora keeps a target `http::Uri` cannot parse only here (its
    // `uri` is then `/`).
    let raw = req.raw_path();
    let absolute = |scheme: &[u8]| {
        raw.len() > scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    let form_ok = raw.starts_with(b"/")
        || absolute(b"http://")
        || absolute(b"https://")
        || (raw == b"*" && req.method == http::Method::OPTIONS);
    if !form_ok {
        return Err(bad("malformed request target\n"));
    }
    let path = raw.split(|&b| b == b'?').next().unwrap_or(raw);
    if escaped_control(path) || path.iter().any(|b| b.is_ascii_control()) {
        return Err(bad("control character in the request path\n"));
    }
    Ok(())
}

/// `%00`–`%1F` or `%7F` in a path: a control character, escaped.
pub fn escaped_control(path: &[u8]) -> bool {
    path.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()),
                (b'0' | b'1', b'0'..=b'9' | b'A'..=b'F') | (b'7', b'F')
            )
    })
}

/// Whether a raw header block has a `Content-Length` field (any case, at a line start).
fn names_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length";
    raw.split(|&b| b == b'\n').any(|line| {
        line.len() > NAME.len()
            && line[..NAME.len()].eq_ignore_ascii_case(NAME)
            && matches!(line[NAME.len()], b':' | b' ' | b'\t')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).unwrap();
        r.set_version(version);
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn status(version: Version, headers: &[(&str, &str)]) -> u16 {
        let r = req(version, headers);
        check(&r, &Scan::of(&r), None).map_or_else(|r| r.status, |()| 0)
    }

    #[test]
    fn host_is_required_once_on_http_1_1() {
        assert_eq!(status(Version::HTTP_11, &[]), 400);
        assert_eq!(
            status(Version::HTTP_11, &[("host", "a"), ("host", "b")]),
            400
        );
        assert_eq!(status(Version::HTTP_11, &[("host", "a")]), 0);
        assert_eq!(status(Version::HTTP_10, &[]), 0);
    }

    #[test]
    fn only_plain_chunked_is_a_transfer_coding() {
        let h = |te: &str| {
            status(
                Version::HTTP_11,
                &[("host", "a"), ("transfer-encoding", te)],
            )
        };
        assert_eq!(h("chunked"), 0);
        assert_eq!(h("Chunked"), 0);
        assert_eq!(h("gzip, chunked"), 501);
        assert_eq!(h("identity"), 501);
        assert_eq!(h("chunked, chunked"), 400);
        assert_eq!(h("chunked;x=1"), 501);
        let twice = status(
            Version::HTTP_11,
            &[
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
        );
        assert_eq!(twice, 400);
    }

    #[test]
    fn a_length_sent_beside_chunked_is_found_in_the_raw_header() {
        let r = req(
            Version::HTTP_11,
            &[("host", "a"), ("transfer-encoding", "chunked")],
        );
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n";
        assert_eq!(check(&r, &Scan::of(&r), Some(raw)).unwrap_err().status, 400);
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 5\r\n\r\n";
        assert!(check(&r, &Scan::of(&r), Some(raw)).is_ok());
    }

    fn target(t: &str) -> u16 {
        let method = if t == "*" { "OPTIONS" } else { "GET" };
        let mut r = RequestHeader::build(method, t.as_bytes(), None).unwrap();
        r.append_header("host", "a").unwrap();
        check(&r, &Scan::of(&r), None).map_or_else(|r| r.status, |()| 0)
    }

    #[test]
    fn the_target_is_a_path_an_absolute_url_or_a_star() {
        assert_eq!(target("/reviews?product_id=1"), 0);
        assert_eq!(target("http://a/reviews"), 0);
        assert_eq!(target("*"), 0);
        assert_eq!(target("%20/reviews"), 400);
        assert_eq!(target("reviews"), 400);
        assert_eq!(target("ftp://a/x"), 400);
    }

    #[test]
    fn a_control_character_in_the_path_is_refused_escaped_or_not() {
        assert_eq!(target("/t/%01x"), 400);
        assert_eq!(target("/t/%7f"), 400);
        assert_eq!(target("/t/%1F"), 400);
        assert_eq!(target("/t/%20x"), 0);
        assert_eq!(target("/t/%2F"), 0);
        assert_eq!(
            target("/t/x?q=%01"),
            0,
            "the query is the origin's business"
        );
    }

    #[test]
    fn a_length_is_one_plain_number() {
        let h = |cl: &[&str]| {
            let mut all = vec![("host", "a")];
            all.extend(cl.iter().map(|v| ("content-length", *v)));
            status(Version::HTTP_11, &all)
        };
        assert_eq!(h(&["2"]), 0);
        assert_eq!(h(&["2, 2"]), 400);
        assert_eq!(h(&["2", "2"]), 400);
        assert_eq!(h(&["+2"]), 400);
        assert_eq!(h(&[""]), 400);
    }
}

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
//!
//! Every refusal closes the connection: what follows the header cannot be trusted.

use http::{Version, header};
use pingora_http::RequestHeader;

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

/// Checks a request's framing headers; `Err` says how to refuse it.
pub fn check(req: &RequestHeader) -> Result<(), Refusal> {
    let hosts = req.headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(bad("more than one Host header\n"));
    }
    if hosts == 0 && req.version == Version::HTTP_11 {
        return Err(bad("HTTP/1.1 request without a Host header\n"));
    }
    let mut codings = req.headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if codings.next().is_some() {
            return Err(bad("Transfer-Encoding given more than once\n"));
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
    let mut lengths = req.headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let plain = first.as_bytes();
        if lengths.next().is_some() || plain.is_empty() || !plain.iter().all(u8::is_ascii_digit) {
            return Err(bad("Content-Length must be given once, as a number\n"));
        }
    }
    Ok(())
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
        check(&req(version, headers)).map_or_else(|r| r.status, |()| 0)
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

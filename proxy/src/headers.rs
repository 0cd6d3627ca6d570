//! The header names the edge reads and writes, the one way it reads a `Content-Length`, and
//! [`Scan`]: what the edge needs from a request's header fields, in one pass over them
//! rather than a hash lookup per question (hits included, every request pays for this).

use http::{HeaderMap, HeaderValue, header};
use pingora_http::RequestHeader;

/// `hit`, `miss`, `stale`, `expired` or `bypass` on every response.
pub const X_CACHE_STATUS: &str = "x-cache-status";
/// The tags a response belongs to (`product-2`), sent by the API and removed by the edge.
pub const SURROGATE_KEY: &str = "surrogate-key";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const RETRY_AFTER: &str = "retry-after";

/// The body length a message announces: one `Content-Length` holding one decimal number.
/// `None` when it is absent, repeated, a list or not a number.
pub fn content_length(headers: &HeaderMap) -> Option<usize> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).into_iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// RFC 9112 section 9.3: whether a connection persists after this request, from its version
/// and its `Connection` field values. HTTP/1.1 persists unless `close`; HTTP/1.0 only with
/// `keep-alive`.
pub fn keeps_alive<'a>(http10: bool, connection: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let (mut close, mut keep_alive) = (false, false);
    for value in connection {
        for token in value.split(|&b| b == b',') {
            let t = token.trim_ascii();
            close |= t.eq_ignore_ascii_case(b"close");
            keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (!http10 || keep_alive)
}

/// What one pass over a request's fields tells the edge.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    pub hosts: usize,
    /// The first `Transfer-Encoding` and how many there are.
    pub transfer_encoding: Option<&'a HeaderValue>,
    pub transfer_encodings: usize,
    /// The first `Content-Length` and how many there are.
    pub content_length: Option<&'a HeaderValue>,
    pub content_lengths: usize,
    /// `Authorization` or `Cookie` present: never served from or stored in the cache.
    pub credentials: bool,
    pub accept_encoding: Option<&'a [u8]>,
    /// Fields in the header.
    pub fields: usize,
    /// Request line plus fields, near enough as they came on the wire.
    pub bytes: usize,
}

impl<'a> Scan<'a> {
    pub fn of(req: &'a RequestHeader) -> Self {
        // No `uri.to_string()`: that allocates.
        let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
            + req.uri.authority().map_or(0, |a| a.as_str().len());
        let mut s = Scan {
            bytes: req.method.as_str().len() + target + 12,
            ..Scan::default()
        };
        for (name, value) in req.headers.iter() {
            s.fields += 1;
            s.bytes += name.as_str().len() + value.len() + 4;
            if name == header::HOST {
                s.hosts += 1;
            } else if name == header::TRANSFER_ENCODING {
                s.transfer_encodings += 1;
                s.transfer_encoding.get_or_insert(value);
            } else if name == header::CONTENT_LENGTH {
                s.content_lengths += 1;
                s.content_length.get_or_insert(value);
            } else if name == header::AUTHORIZATION || name == header::COOKIE {
                s.credentials = true;
            } else if name == header::ACCEPT_ENCODING && s.accept_encoding.is_none() {
                s.accept_encoding = Some(value.as_bytes());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::CONTENT_LENGTH, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_one_plain_number_is_a_length() {
        assert_eq!(content_length(&with(&["42"])), Some(42));
        assert_eq!(content_length(&with(&[])), None);
        for bad in [
            &["2, 2"][..],
            &["2", "2"],
            &["+2"],
            &["-1"],
            &[" 2"],
            &["0x10"],
            &[""],
        ] {
            assert_eq!(content_length(&with(bad)), None, "{bad:?}");
        }
    }
}

//! The header names the edge reads and writes, and the one way it reads a `Content-Length`.

use http::HeaderMap;

/// `hit`, `miss`, `stale`, `expired` or `bypass` on every response.
pub const X_CACHE_STATUS: &str = "x-cache-status";
/// The tags a response belongs to (`product-2`), sent by the API and removed by the edge.
pub const SURROGATE_KEY: &str = "surrogate-key";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
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

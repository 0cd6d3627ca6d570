//! Content negotiation and compression. A body is compressed at most once per entry and
//! encoding (by the fill when its client accepts it, else by the first hit that asks) and the
//! result is kept in the entry, so hits reuse it and identity-only traffic never pays for it.

use bytes::Bytes;

use crate::config::{CompressionConfig, EncodingName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Br,
}

impl Encoding {
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Br => Some("br"),
        }
    }
}

impl From<EncodingName> for Encoding {
    fn from(n: EncodingName) -> Self {
        match n {
            EncodingName::Gzip => Encoding::Gzip,
            EncodingName::Br => Encoding::Br,
        }
    }
}

/// What the client's `Accept-Encoding` allows: q=0 refuses a coding, `*` stands for any
/// coding not named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepts {
    pub gzip: bool,
    pub br: bool,
}

pub fn parse_accept_encoding(value: Option<&[u8]>) -> Accepts {
    let Some(text) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
        return Accepts::default();
    };
    let (mut gzip, mut br, mut star) = (None, None, None);
    for item in text.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let ok = q > 0.0;
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(ok);
        } else if coding.eq_ignore_ascii_case("br") {
            br = Some(ok);
        } else if coding == "*" {
            star = Some(ok);
        }
    }
    Accepts {
        gzip: gzip.or(star).unwrap_or(false),
        br: br.or(star).unwrap_or(false),
    }
}

impl Accepts {
    pub fn allows(self, e: Encoding) -> bool {
        match e {
            Encoding::Identity => true,
            Encoding::Gzip => self.gzip,
            Encoding::Br => self.br,
        }
    }
}

pub fn compress(e: Encoding, body: &[u8], config: &CompressionConfig) -> Option<Bytes> {
    match e {
        Encoding::Identity => None,
        Encoding::Gzip => gzip(body, config.gzip_level),
        Encoding::Br => {
            let mut out = Vec::with_capacity(body.len() / 3 + 64);
            // A window just large enough for the body: the encoder allocates and clears
            // tables sized by it, which dominates the cost for small JSON bodies.
            let lgwin = (usize::BITS - body.len().max(1).leading_zeros()).clamp(10, 22) as i32;
            let params = brotli::enc::BrotliEncoderParams {
                quality: config.brotli_quality as i32,
                lgwin,
                size_hint: body.len(),
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
            out.shrink_to_fit();
            Some(Bytes::from(out))
        }
    }
}

thread_local! {
    /// One deflate state per thread, reset between bodies: creating one allocates (and the
    /// kernel zero-fills) a few hundred KiB, which cost more than compressing a small body.
    static DEFLATE: std::cell::RefCell<Option<(u32, flate2::Compress)>> = const { std::cell::RefCell::new(None) };
}

/// RFC 1952 gzip: a fixed 10-byte header, raw deflate, CRC-32 and length.
fn gzip(body: &[u8], level: u32) -> Option<Bytes> {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    out.extend_from_slice(&HEADER);
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fresh = !matches!(&*slot, Some((l, _)) if *l == level);
        if fresh {
            *slot = Some((
                level,
                flate2::Compress::new(flate2::Compression::new(level), false),
            ));
        }
        let (_, deflate) = slot.as_mut().expect("just set");
        deflate.reset();
        let mut input = body;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = deflate.total_in();
            let status = deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Finish)
                .ok()?;
            input = &input[(deflate.total_in() - before) as usize..];
            if status == flate2::Status::StreamEnd {
                return Some(());
            }
        }
    })?;
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    // Stored for the entry's lifetime: don't keep the spare capacity.
    out.shrink_to_fit();
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_zero_refuses_and_star_stands_for_the_rest() {
        let a = parse_accept_encoding(Some(b"gzip, deflate, br"));
        assert!(a.gzip && a.br);
        let a = parse_accept_encoding(Some(b"gzip;q=0, *"));
        assert!(!a.gzip && a.br);
        let a = parse_accept_encoding(Some(b"identity"));
        assert!(!a.gzip && !a.br);
        assert_eq!(parse_accept_encoding(None), Accepts::default());
    }

    #[test]
    fn the_reused_deflate_state_gives_independent_gzip_members() {
        for body in [&b"a"[..], &[b'x'; 100_000][..], b"", br#"{"k":"v"}"#] {
            let gz = gzip(body, 6).unwrap();
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out)
                .unwrap();
            assert_eq!(out, body);
        }
    }

    #[test]
    fn compressed_bodies_round_trip() {
        let config = CompressionConfig {
            enabled: true,
            min_size: reviews_shared::units::ByteSize(0),
            encodings: vec![EncodingName::Gzip, EncodingName::Br],
            gzip_level: 6,
            brotli_quality: 5,
        };
        let body = br#"{"product":"2","results":[]}"#.repeat(50);
        let gz = compress(Encoding::Gzip, &body, &config).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out, body);
        let br = compress(Encoding::Br, &body, &config).unwrap();
        let mut out = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut out).unwrap();
        assert_eq!(out, body);
        assert!(gz.len() < body.len() / 4 && br.len() < body.len() / 4);
    }
}

//! Which edges read the stream, and how far each has applied it.
//!
//! Every edge reading the stream reports the id of the last entry it applied, at least once a
//! second, as a key that Redis expires after [`READER_SILENCE`]: `{stream}:reader:{origin}`,
//! listed in the set `{stream}:readers`. Liveness is Redis's clock, not the hosts', so clock
//! skew between boxes cannot make a live edge look dead or a dead one live. A publisher that
//! waits for its purge to be applied everywhere ([`super::confirm`]) reads these.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// An edge that has not reported for this long is taken for gone: a purge is not waited
/// for there (it drops what it holds on reconnecting if it missed anything, and meanwhile
/// stores entries for at most `invalidation.disconnected_ttl`).
pub const READER_SILENCE: Duration = Duration::from_secs(3);

/// A stream entry id (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StreamPos {
    pub ms: u64,
    pub seq: u64,
}

impl StreamPos {
    /// `None` for anything that is not `<ms>-<seq>`.
    pub fn parse(id: &str) -> Option<StreamPos> {
        let (ms, seq) = id.split_once('-')?;
        Some(StreamPos {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl Ord for StreamPos {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl PartialOrd for StreamPos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StreamPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

fn set_key(stream: &str) -> String {
    format!("{stream}:readers")
}

fn reader_key(stream: &str, origin: &str) -> String {
    format!("{stream}:reader:{origin}")
}

/// Reports that `origin` has applied everything up to `pos` (and is alive).
pub async fn report(
    conn: &mut MultiplexedConnection,
    stream: &str,
    origin: &str,
    pos: &str,
) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("SET")
        .arg(reader_key(stream, origin))
        .arg(pos)
        .arg("PX")
        .arg(READER_SILENCE.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(set_key(stream))
        .arg(origin)
        .ignore()
        .query_async::<()>(conn)
        .await
}

/// Withdraws `origin` (an edge shutting down): nobody waits for it from now on.
pub async fn leave(
    conn: &mut MultiplexedConnection,
    stream: &str,
    origin: &str,
) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("DEL")
        .arg(reader_key(stream, origin))
        .ignore()
        .cmd("SREM")
        .arg(set_key(stream))
        .arg(origin)
        .ignore()
        .query_async::<()>(conn)
        .await
}

/// The live readers and the position each has applied. Readers whose report expired are
/// removed from the set on the way.
pub async fn positions(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<HashMap<String, StreamPos>> {
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(set_key(stream))
        .query_async(conn)
        .await?;
    if members.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<String> = members.iter().map(|m| reader_key(stream, m)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    let mut live = HashMap::new();
    let mut gone = Vec::new();
    for (origin, value) in members.into_iter().zip(values) {
        match value.as_deref().and_then(StreamPos::parse) {
            Some(p) => {
                live.insert(origin, p);
            }
            None => gone.push(origin),
        }
    }
    if !gone.is_empty() {
        redis::cmd("SREM")
            .arg(set_key(stream))
            .arg(&gone)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_as_redis_orders_ids() {
        let p = |s| StreamPos::parse(s).unwrap();
        assert!(p("1700000000000-0") < p("1700000000000-1"));
        assert!(p("1700000000000-9") < p("1700000000001-0"));
        assert!(p("9-0") < p("10-0"), "numeric, not lexical");
        assert_eq!(p("0-0"), StreamPos::default());
        assert_eq!(p("12-3").to_string(), "12-3");
        for bad in ["", "12", "a-1", "1-", "-1", "1-2-3"] {
            assert_eq!(StreamPos::parse(bad), None, "{bad:?}");
        }
    }
}

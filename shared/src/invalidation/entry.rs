//! One stream entry: `origin` (who published it), `kind` (`tags`, `key` or `all`), `value`
//! (the tags, space separated as in `Surrogate-Key`, or the cache key) and `at` (publish
//! time, milliseconds since the epoch, from which a reader measures its lag).

use redis::streams::StreamId;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Tags(Vec<String>),
    Key(String),
    All,
}

/// An entry as read back from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub origin: String,
    pub what: Invalidation,
    pub at_ms: u64,
}

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Published {
    /// The field-value pairs of `XADD`.
    pub fn fields(&self) -> [(&'static str, String); 4] {
        let (kind, value) = match &self.what {
            Invalidation::Tags(tags) => ("tags", tags.join(" ")),
            Invalidation::Key(k) => ("key", k.clone()),
            Invalidation::All => ("all", String::new()),
        };
        [
            ("origin", self.origin.clone()),
            ("kind", kind.into()),
            ("value", value),
            ("at", self.at_ms.to_string()),
        ]
    }

    /// An entry read from the stream; `None` for one this version does not understand (it is
    /// skipped, not fatal: a newer publisher may add kinds).
    pub fn parse(entry: &StreamId) -> Option<Published> {
        let origin: String = entry.get("origin")?;
        let kind: String = entry.get("kind")?;
        let value: String = entry.get("value").unwrap_or_default();
        let at_ms = entry
            .get::<String>("at")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let what = match kind.as_str() {
            "tags" => {
                Invalidation::Tags(value.split_ascii_whitespace().map(String::from).collect())
            }
            "key" => Invalidation::Key(value),
            "all" => Invalidation::All,
            _ => return None,
        };
        Some(Published {
            origin,
            what,
            at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read_back(p: &Published) -> Option<Published> {
        let map: HashMap<String, redis::Value> = p
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), redis::Value::BulkString(v.into_bytes())))
            .collect();
        Published::parse(&StreamId {
            id: "1-0".into(),
            map,
            ..Default::default()
        })
    }

    #[test]
    fn every_kind_reads_back_as_written() {
        for what in [
            Invalidation::Tags(vec!["product-2".into(), "product-3".into()]),
            Invalidation::Key("GET /reviews/meta?product_id=2".into()),
            Invalidation::All,
        ] {
            let p = Published {
                origin: "edge-1/42/0".into(),
                what,
                at_ms: 1_700_000_000_000,
            };
            assert_eq!(read_back(&p), Some(p));
        }
    }

    #[test]
    fn an_unknown_kind_is_skipped() {
        let mut map = HashMap::new();
        for (k, v) in [("origin", "x"), ("kind", "flush-dns"), ("value", "")] {
            map.insert(k.to_owned(), redis::Value::BulkString(v.into()));
        }
        let id = StreamId {
            id: "1-0".into(),
            map,
            ..Default::default()
        };
        assert_eq!(Published::parse(&id), None);
    }
}

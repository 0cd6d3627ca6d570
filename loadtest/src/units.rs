//! Human units on the command line and in scenario files: durations (the workspace's one
//! grammar, from `reviews-shared`) and latencies as reports display them.

/// Durations read and written in the workspace's one grammar (`60s`, `1m30s`, `250ms`; a bare
/// number is seconds), shared with the configs.
pub use reviews_shared::units::{HumanDuration, format_duration, parse_duration};

/// Formats a latency given in milliseconds with a unit that keeps 3 significant figures readable:
/// `87µs`, `1.24ms`, `12.3ms`, `1.52s`.
pub fn format_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "-".to_string();
    }
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Implements `serde::Deserialize` for a type through its `FromStr`, so scenario files accept
/// the same text as the command line and a bad value's error (which the TOML parser prints with
/// the offending line) says what was expected.
macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use deserialize_from_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_keep_three_significant_figures() {
        assert_eq!(format_ms(0.087), "87µs");
        assert_eq!(format_ms(1.2345), "1.23ms");
        assert_eq!(format_ms(12.34), "12.3ms");
        assert_eq!(format_ms(1520.0), "1.52s");
    }
}

//! Human units on the command line and in scenario files: durations such as `60s`, `1m30s`,
//! `250ms`, and their display in reports.

use std::time::Duration;

/// Parses `500ms`, `60s`, `1.5s`, `2m`, `1h`, `1m30s` or `250us`. A bare number is refused: a
/// duration without a unit is ambiguous between tools (k6 reads ms, loader.io reads s).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "invalid duration {text:?}: expected a number with a unit, like 60s, 1m30s or 250ms"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_end == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(err()),
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

/// Formats a duration the way [`parse_duration`] reads it, compactly: `60s`, `1m30s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

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

/// A duration written with a unit, as scenario files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(HumanDuration)
    }
}
deserialize_from_str!(HumanDuration);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_need_a_unit() {
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3x").is_err());
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn latencies_keep_three_significant_figures() {
        assert_eq!(format_ms(0.087), "87µs");
        assert_eq!(format_ms(1.2345), "1.23ms");
        assert_eq!(format_ms(12.34), "12.3ms");
        assert_eq!(format_ms(1520.0), "1.52s");
    }

    proptest! {
        #[test]
        fn formatted_durations_parse_back(ms in 0u64..10_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,12}") {
            let _ = parse_duration(&text);
        }
    }
}

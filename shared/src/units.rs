//! Human units in config files: byte sizes (`"3GiB"`, `"512MB"`, `1024`) and durations
//! (`"250ms"`, `"2s"`, `"5m"`). Both deserialize from a string or a bare integer so an
//! operator can write either; both print back in the form they parse.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes, written with an optional binary (`KiB`, `MiB`, `GiB`) or decimal
/// (`KB`, `MB`, `GB`) suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected a size like \"3GiB\", \"512MiB\" or \"64KB\", got {0:?}")]
pub struct ByteSizeError(String);

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ByteSizeError(s.to_owned());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => return Err(err()),
        };
        if num.is_empty() {
            return Err(err());
        }
        if let Ok(n) = num.parse::<u64>() {
            return n.checked_mul(mult).map(ByteSize).ok_or_else(err);
        }
        // Fractions ("1.5GiB") are allowed; the result is rounded down to whole bytes.
        let f: f64 = num.parse().map_err(|_| err())?;
        let bytes = f * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, name) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A duration with a unit, in the one grammar every role reads (config files, environment
/// overrides, command-line flags, load-test scenarios): see [`parse_duration`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected a duration like \"250ms\", \"2s\", \"1m30s\" or \"1h\", got {0:?}")]
pub struct DurationError(String);

/// Parses `250ms`, `2s`, `1.5s`, `5m`, `1h`, `1m30s`, `250us`; a bare number is seconds.
/// Units: `h`, `m` (or `min`), `s`, `ms`, `us` (or `µs`), `ns`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.to_owned());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        return rest.parse().map(Duration::from_secs).map_err(|_| err());
    }
    // Whole numbers are added up exactly in nanoseconds; only fractions (`1.5s`) go through
    // floating point.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_end == 0 {
            return Err(err());
        }
        let number = &rest[..num_end];
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit: u128 = match rest[..unit_end].trim() {
            "h" => 3_600_000_000_000,
            "m" | "min" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(err()),
        };
        let nanos = match number.parse::<u128>() {
            Ok(whole) => whole.checked_mul(nanos_per_unit).ok_or_else(err)?,
            Err(_) => {
                let value: f64 = number.parse().map_err(|_| err())?;
                let nanos = (value * nanos_per_unit as f64).round();
                if !nanos.is_finite() || nanos < 0.0 || nanos > u64::MAX as f64 {
                    return Err(err());
                }
                nanos as u128
            }
        };
        total = total.checked_add(nanos).ok_or_else(err)?;
        rest = &rest[unit_end..];
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration the way [`parse_duration`] reads it, compactly: `60s`, `1m30s`,
/// `250ms`, `2h`.
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

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Accepts a string in the type's human form or a bare non-negative integer.
struct HumanVisitor<T>(std::marker::PhantomData<T>, &'static str);

impl<T> Visitor<'_> for HumanVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if v < 0 {
            return Err(E::custom(format!(
                "{} must not be negative, got {v}",
                self.1
            )));
        }
        v.to_string().parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        v.to_string().parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HumanVisitor(
            std::marker::PhantomData,
            "a size like \"3GiB\"",
        ))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HumanVisitor(
            std::marker::PhantomData,
            "a duration like \"2s\"",
        ))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_accept_binary_and_decimal_suffixes() {
        assert_eq!("3GiB".parse(), Ok(ByteSize(3 << 30)));
        assert_eq!("512 MiB".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("64KB".parse(), Ok(ByteSize(64_000)));
        assert_eq!("1.5GiB".parse(), Ok(ByteSize(3 << 29)));
        assert_eq!("100".parse(), Ok(ByteSize(100)));
    }

    #[test]
    fn sizes_reject_garbage_with_the_value_in_the_message() {
        let e = "3GB!".parse::<ByteSize>().unwrap_err();
        assert!(e.to_string().contains("\"3GB!\""), "{e}");
        assert!("GiB".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn durations_accept_ms_s_m_h() {
        assert_eq!(
            "250ms".parse(),
            Ok(HumanDuration(Duration::from_millis(250)))
        );
        assert_eq!("2s".parse(), Ok(HumanDuration(Duration::from_secs(2))));
        assert_eq!("5m".parse(), Ok(HumanDuration(Duration::from_secs(300))));
        assert_eq!("1h".parse(), Ok(HumanDuration(Duration::from_secs(3600))));
        assert!("2 days".parse::<HumanDuration>().is_err());
        assert!("s".parse::<HumanDuration>().is_err());
        assert!("".parse::<HumanDuration>().is_err());
        assert!("3x".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn durations_compound_fractions_and_bare_seconds() {
        let d = |t: &str| parse_duration(t).unwrap();
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("250us"), Duration::from_micros(250));
        assert_eq!(d("2min"), Duration::from_secs(120));
        assert_eq!(d("60"), Duration::from_secs(60), "a bare number is seconds");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    proptest! {
        #[test]
        fn parsing_a_duration_never_panics(text in "\\PC{0,12}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn sizes_round_trip_through_display(n in 0u64..(1u64 << 50)) {
            let s = ByteSize(n).to_string();
            prop_assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(n)));
        }

        #[test]
        fn durations_round_trip_through_display(ms in 0u64..(1u64 << 40)) {
            let d = HumanDuration(Duration::from_millis(ms));
            prop_assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
        }
    }
}

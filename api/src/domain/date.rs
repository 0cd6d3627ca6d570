//! Review dates: stored as epoch milliseconds (the data set's own unit), served as ISO-8601
//! UTC with milliseconds (`2021-03-17T13:28:37.620Z`).

use chrono::{DateTime, SecondsFormat};

/// Formats epoch milliseconds the way the contract shows dates. Out-of-range values (which
/// the importer and the API never store) fall back to the epoch rather than panicking.
pub fn format_epoch_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_date_keeps_its_milliseconds() {
        assert_eq!(format_epoch_ms(1615987717620), "2021-03-17T13:28:37.620Z");
    }

    #[test]
    fn whole_seconds_still_print_three_digits() {
        assert_eq!(
            format_epoch_ms(1_600_000_000_000),
            "2020-09-13T12:26:40.000Z"
        );
    }
}

//! The meta `value`: a characteristic's mean rating as a decimal string with exactly 16
//! digits after the point, rounded half up, computed from the exact integer sum and count.
//! Floating point would print `3.6666666666666665` for 11/3; the contract says `…667`.

/// Formats `sum / count` with 16 decimals, half up; `None` when nobody rated it.
pub fn format_mean(sum: i64, count: i64) -> Option<String> {
    let mut out = Vec::with_capacity(24);
    write_mean(&mut out, sum, count).then(|| String::from_utf8(out).unwrap_or_default())
}

/// Appends what [`format_mean`] returns to `out`; `false` (and nothing appended) when nobody
/// rated it. Written digit by digit: a meta page formats one per characteristic, and
/// `format!` with padding was a tenth of the page's instructions.
pub fn write_mean(out: &mut Vec<u8>, sum: i64, count: i64) -> bool {
    if count <= 0 {
        return false;
    }
    const SCALE: i128 = 10_000_000_000_000_000; // 10^16
    let (sum, count) = (sum as i128, count as i128);
    let negative = sum < 0;
    let abs = sum.unsigned_abs() as i128;
    // Scaled quotient and remainder; round half up on the magnitude.
    let scaled = abs * SCALE;
    let mut q = scaled / count;
    if 2 * (scaled % count) >= count {
        q += 1;
    }
    let (int, frac) = (q / SCALE, (q % SCALE) as u64);
    if negative && q != 0 {
        out.push(b'-');
    }
    out.extend_from_slice(itoa::Buffer::new().format(int).as_bytes());
    out.push(b'.');
    let mut digits = [b'0'; 16];
    let mut f = frac;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&digits);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn eleven_thirds_rounds_the_last_digit_up() {
        assert_eq!(format_mean(11, 3).as_deref(), Some("3.6666666666666667"));
    }

    #[test]
    fn whole_means_print_sixteen_zeros() {
        assert_eq!(format_mean(4, 1).as_deref(), Some("4.0000000000000000"));
        assert_eq!(format_mean(21, 5).as_deref(), Some("4.2000000000000000"));
        assert_eq!(format_mean(7, 2).as_deref(), Some("3.5000000000000000"));
    }

    #[test]
    fn a_characteristic_nobody_rated_has_no_value() {
        assert_eq!(format_mean(0, 0), None);
    }

    #[test]
    fn one_third_rounds_down_and_two_thirds_up() {
        assert_eq!(format_mean(1, 3).as_deref(), Some("0.3333333333333333"));
        assert_eq!(format_mean(2, 3).as_deref(), Some("0.6666666666666667"));
    }

    #[test]
    fn exact_half_of_the_last_digit_rounds_up() {
        // 1 / (2 * 10^16) = 0.00000000000000005 → half of the 16th digit → up.
        assert_eq!(
            format_mean(1, 20_000_000_000_000_000).as_deref(),
            Some("0.0000000000000001")
        );
    }

    proptest! {
        /// The printed value is the exact quotient to within half a unit of the 16th decimal,
        /// checked with integer arithmetic only.
        #[test]
        fn value_is_within_half_a_unit_of_the_exact_mean(count in 1i64..50_000_000, per in 0u8..=50) {
            let sum = (count as i128 * per as i128 / 10).max(count as i128) as i64; // mean in 1..=5
            let s = format_mean(sum, count).unwrap();
            let (int, frac) = s.split_once('.').unwrap();
            prop_assert_eq!(frac.len(), 16);
            let printed: i128 = format!("{int}{frac}").parse().unwrap();
            // |printed/10^16 - sum/count| <= 1/2 * 10^-16  ⇔  |2*printed*count - 2*sum*10^16| <= count
            let diff = (2 * printed * count as i128 - 2 * sum as i128 * 10i128.pow(16)).abs();
            prop_assert!(diff <= count as i128, "{} for {}/{}", s, sum, count);
            // Half up: a tie goes to the larger value.
            if diff == count as i128 {
                prop_assert!(2 * printed * count as i128 > 2 * sum as i128 * 10i128.pow(16));
            }
        }
    }
}

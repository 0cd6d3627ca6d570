//! The open-model arrival schedule: when each request is due, computed up front from the stages
//! so that no response can delay the next start (the coordinated-omission trap of closed loops).
//!
//! A stage either holds a rate (`1000:30s`) or ramps linearly between two rates
//! (`1000..5000:60s`). Request `k` of a stage is due at the instant the stage's expected count
//! reaches `k`, so the number of requests is exactly `round(mean rate × duration)`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::units::{deserialize_from_str, format_duration, parse_duration};

/// One stage of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// Requests per second at the start of the stage.
    pub from_rps: f64,
    /// Requests per second at the end of the stage (equal to `from_rps` for a constant stage).
    pub to_rps: f64,
    pub duration: Duration,
}

impl Stage {
    pub fn constant(rps: f64, duration: Duration) -> Self {
        Stage {
            from_rps: rps,
            to_rps: rps,
            duration,
        }
    }

    /// How many requests this stage schedules.
    pub fn requests(&self) -> u64 {
        ((self.from_rps + self.to_rps) / 2.0 * self.duration.as_secs_f64()).round() as u64
    }

    /// Seconds into the stage at which the expected count reaches `k`: the inverse of
    /// `count(t) = from·t + (to − from)·t² / 2T`. Written as `2k / (from + √(from² + 4ak))`
    /// because that form stays exact for a constant rate (a = 0) and a ramp from zero.
    fn offset_of(&self, k: u64) -> f64 {
        let k = k as f64;
        let t = self.duration.as_secs_f64();
        let a = (self.to_rps - self.from_rps) / (2.0 * t);
        let disc = (self.from_rps * self.from_rps + 4.0 * a * k).max(0.0);
        let denom = self.from_rps + disc.sqrt();
        if denom <= 0.0 { 0.0 } else { 2.0 * k / denom }
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let err = |why: &str| {
            format!(
                "invalid stage {text:?}: {why} (expected RATE:DURATION like 1000:30s, or FROM..TO:DURATION like 0..5000:60s)"
            )
        };
        let (rates, duration) = text.trim().split_once(':').ok_or_else(|| err("no ':'"))?;
        let duration = parse_duration(duration).map_err(|e| err(&e.to_string()))?;
        if duration.is_zero() {
            return Err(err("the duration is zero"));
        }
        let rate = |s: &str| -> Result<f64, String> {
            let r: f64 = s
                .trim()
                .parse()
                .map_err(|_| err("the rate is not a number"))?;
            if !r.is_finite() || r < 0.0 {
                return Err(err("the rate must be a non-negative number"));
            }
            Ok(r)
        };
        let (from_rps, to_rps) = match rates.split_once("..") {
            Some((a, b)) => (rate(a)?, rate(b)?),
            None => {
                let r = rate(rates)?;
                (r, r)
            }
        };
        Ok(Stage {
            from_rps,
            to_rps,
            duration,
        })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from_rps == self.to_rps {
            write!(f, "{}:{}", self.from_rps, format_duration(self.duration))
        } else {
            write!(
                f,
                "{}..{}:{}",
                self.from_rps,
                self.to_rps,
                format_duration(self.duration)
            )
        }
    }
}
deserialize_from_str!(Stage);

/// The whole schedule: stages run back to back.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub stages: Vec<Stage>,
}

impl Schedule {
    pub fn constant(rps: f64, duration: Duration) -> Self {
        Schedule {
            stages: vec![Stage::constant(rps, duration)],
        }
    }

    /// Total number of requests the schedule starts.
    pub fn requests(&self) -> u64 {
        self.stages.iter().map(Stage::requests).sum()
    }

    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// Mean requests per second over the whole schedule.
    pub fn mean_rps(&self) -> f64 {
        self.requests() as f64 / self.duration().as_secs_f64()
    }

    /// Every request's due time, as an offset from the start, in order.
    pub fn offsets(&self) -> impl Iterator<Item = Duration> + Send + '_ {
        let mut stage_start = 0f64;
        self.stages.iter().flat_map(move |stage| {
            let start = stage_start;
            stage_start += stage.duration.as_secs_f64();
            (0..stage.requests()).map(move |k| Duration::from_secs_f64(start + stage.offset_of(k)))
        })
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let stages = text
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Stage>, _>>()?;
        Ok(Schedule { stages })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.stages.iter().map(Stage::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_constant_stage_schedules_rate_times_duration() {
        let s: Schedule = "7000:60s".parse().unwrap();
        assert_eq!(s.requests(), 420_000);
        assert_eq!(s.offsets().count(), 420_000);
        let offsets: Vec<Duration> = "4:1s".parse::<Schedule>().unwrap().offsets().collect();
        assert_eq!(
            offsets,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn a_ramp_schedules_its_mean_rate() {
        let s: Schedule = "0..1000:10s,1000:5s".parse().unwrap();
        assert_eq!(s.requests(), 5000 + 5000);
        let offsets: Vec<Duration> = s.offsets().collect();
        // Ramping up: the first half of the ramp holds a quarter of its requests.
        let first_half = offsets.iter().filter(|d| d.as_secs_f64() < 5.0).count();
        assert!((first_half as i64 - 1250).abs() <= 1, "{first_half}");
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
        assert!(offsets.last().unwrap().as_secs_f64() < 15.0);
    }

    #[test]
    fn stages_reject_what_they_cannot_mean() {
        assert!("1000".parse::<Stage>().is_err());
        assert!("-5:1s".parse::<Stage>().is_err());
        assert!("5:0s".parse::<Stage>().is_err());
        assert!("x:1s".parse::<Stage>().is_err());
    }

    proptest! {
        #[test]
        fn offsets_are_ordered_and_inside_the_schedule(
            from in 0u32..3000, to in 0u32..3000, ms in 100u64..3000
        ) {
            let stage = Stage { from_rps: from as f64, to_rps: to as f64, duration: Duration::from_millis(ms) };
            let s = Schedule { stages: vec![stage, Stage::constant(10.0, Duration::from_secs(1))] };
            let offsets: Vec<Duration> = s.offsets().collect();
            prop_assert_eq!(offsets.len() as u64, s.requests());
            prop_assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(offsets.iter().all(|d| *d <= s.duration()));
        }

        #[test]
        fn stages_print_as_they_parse(from in 0u32..100_000, to in 0u32..100_000, secs in 1u64..10_000) {
            let stage = Stage { from_rps: from as f64, to_rps: to as f64, duration: Duration::from_secs(secs) };
            prop_assert_eq!(stage.to_string().parse::<Stage>().unwrap(), stage);
        }
    }
}

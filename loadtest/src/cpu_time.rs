//! The tester's own CPU use, so a report can say how much of the machine the generator took
//! (on a 2-core box, a generator using 1.5 cores leaves the server half a core).
//!
//! Read from `/proc/self/stat` (Linux) because `getrusage` would need `unsafe`, which the
//! workspace forbids. Elsewhere the figures are absent rather than wrong.

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times. Linux fixes USER_HZ at 100 for user space on
/// every architecture, whatever the kernel's internal HZ.
const USER_HZ: f64 = 100.0;

/// User and system CPU time of this process (all threads) so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn now() -> Option<CpuTime> {
        parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// CPU used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Fields 14 and 15 (utime, stime) of `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_stat(stat: &str) -> Option<CpuTime> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let ticks = |f: Option<&str>| -> Option<Duration> {
        Some(Duration::from_secs_f64(
            f?.parse::<u64>().ok()? as f64 / USER_HZ,
        ))
    };
    Some(CpuTime {
        user: ticks(fields.next())?,
        system: ticks(fields.next())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (my (odd) prog) R 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3 0 100";
        let t = parse_stat(stat).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(750));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        if cfg!(target_os = "linux") {
            assert!(CpuTime::now().is_some());
        }
    }
}

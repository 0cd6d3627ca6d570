//! A one-line progress report on stderr (rows read, rows per second) for people watching a
//! long import; silent unless enabled, which the CLI does only when stderr is a terminal, so
//! logs and CI output stay clean. No dependency: a carriage return and a clear-line escape do.

use std::io::Write;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    file: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            enabled,
            file: "",
            started: now,
            last: now,
        }
    }

    pub fn start_file(&mut self, file: &'static str) {
        self.file = file;
        self.started = Instant::now();
        self.last = self.started;
    }

    /// Called often (every few thousand rows); redraws at most every 250 ms.
    pub fn rows(&mut self, read: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last) < EVERY {
            return;
        }
        self.last = now;
        self.draw(read, false);
    }

    pub fn finish_file(&mut self, read: u64) {
        if self.enabled {
            self.draw(read, true);
        }
    }

    /// A phase after loading (aggregates, indexes), which may take a while on a full set.
    pub fn phase(&self, what: &str) {
        if self.enabled {
            eprintln!("{what}…");
        }
    }

    fn draw(&self, read: u64, done: bool) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = read as f64 / secs;
        let end = if done { "\n" } else { "" };
        let mut err = std::io::stderr().lock();
        // A failed progress write must never fail the import.
        let _ = write!(
            err,
            "\r\x1b[2K{}: {} rows, {} rows/s{}{end}",
            self.file,
            group(read),
            group(rate as u64),
            if done {
                format!(" ({secs:.1} s)")
            } else {
                String::new()
            }
        );
        let _ = err.flush();
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn thousands_are_grouped_with_commas() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(19_327_575), "19,327,575");
    }
}

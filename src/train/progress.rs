//! A one-line progress display on stderr: steps, elapsed, ETA and a message.
//!
//! Hand-written rather than `indicatif`: that crate turns on `portable-atomic`'s
//! `fallback` feature, which changes the build hash of every CubeCL/burn crate and costs
//! a full rebuild of burn.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress over a known number of steps.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
    terminal: bool,
    drawn: bool,
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

impl Progress {
    /// A display for `total` steps; `enabled = false` draws no progress line (the lines
    /// given to [`println`](Progress::println), the evaluations, still print).
    pub fn new(total: usize, enabled: bool) -> Self {
        Progress {
            total,
            start: Instant::now(),
            last_draw: None,
            enabled,
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Redraw (at most twice a second on a terminal; every 5% of the run otherwise).
    pub fn update(&mut self, step: usize, message: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let due = if self.terminal {
            self.last_draw
                .is_none_or(|t| now - t >= Duration::from_millis(500))
        } else {
            let every = (self.total / 20).max(1);
            step.is_multiple_of(every) || step == self.total
        };
        if !due {
            return;
        }
        self.last_draw = Some(now);
        let elapsed = now - self.start;
        let eta = if step > 0 {
            elapsed.mul_f64((self.total.saturating_sub(step)) as f64 / step as f64)
        } else {
            Duration::ZERO
        };
        let line = format!(
            "{step}/{} steps [{}<{}] {message}",
            self.total,
            hms(elapsed),
            hms(eta)
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Print a line above the progress display (also when the display is off).
    pub fn println(&mut self, message: &str) {
        let mut err = std::io::stderr().lock();
        if self.drawn {
            let _ = write!(err, "\r\x1b[2K");
            self.drawn = false;
        }
        let _ = writeln!(err, "{message}");
    }

    /// Clear the display line.
    pub fn finish(&mut self) {
        if self.enabled && self.drawn {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

//! Learning-rate schedules: linear warmup, then linear or cosine decay (or constant).

use serde::{Deserialize, Serialize};

/// The decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Decay {
    /// Linearly to 0 at the last step (transformers' `linear`).
    Linear,
    /// Half a cosine to 0 (transformers' `cosine`).
    Cosine,
    /// Stay at the peak.
    Constant,
}

impl std::str::FromStr for Decay {
    type Err = crate::error::Error;

    /// `linear | cosine | constant` (the example's `--schedule`).
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "linear" => Ok(Decay::Linear),
            "cosine" => Ok(Decay::Cosine),
            "constant" => Ok(Decay::Constant),
            other => Err(crate::error::Error::Unsupported {
                what: "schedule",
                detail: format!("`{other}` (linear, cosine, constant)"),
            }),
        }
    }
}

/// Warmup + decay over a known number of optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Total optimizer steps.
    pub total: usize,
    /// Decay shape.
    pub decay: Decay,
}

impl LrSchedule {
    /// The learning rate for optimizer step `step` (0-based), as transformers'
    /// `get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup`.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        match self.decay {
            Decay::Linear => self.peak * (1.0 - progress).max(0.0),
            Decay::Cosine => self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Constant => self.peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = LrSchedule {
            peak: 1.0,
            warmup: 10,
            total: 110,
            decay: Decay::Linear,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr(110), 0.0);
        let c = LrSchedule {
            decay: Decay::Cosine,
            ..s
        };
        assert!((c.lr(60) - 0.5).abs() < 1e-12);
        assert!(c.lr(30) > s.lr(30));
    }
}

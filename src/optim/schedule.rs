//! Learning rate by step: linear warm-up, then a decay over the remaining
//! steps.

use crate::error::{Error, Result};

/// The decay after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Multiplied by `gamma` every `step_epochs` epochs.
    Step,
    /// Half a cosine from the base rate to zero.
    Cosine,
    /// Straight down to zero (the ShuffleNet paper's).
    Linear,
}

/// A learning-rate schedule over `total_steps` optimiser steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    /// Steps of linear warm-up from `base_lr / warmup_steps` to `base_lr`.
    pub warmup_steps: usize,
    pub total_steps: usize,
    /// For `Step`: steps between decays, and the factor.
    pub step_every: usize,
    pub gamma: f64,
}

impl Schedule {
    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr > 0.0 && self.base_lr.is_finite()) {
            return Err(Error::invalid(format!(
                "learning rate {} must be positive",
                self.base_lr
            )));
        }
        if self.kind == ScheduleKind::Step
            && (self.step_every == 0 || self.gamma.is_nan() || self.gamma <= 0.0)
        {
            return Err(Error::invalid(
                "step schedule: the interval and gamma must be positive",
            ));
        }
        Ok(())
    }

    /// The rate for step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let done = (step - self.warmup_steps) as f64;
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = (done / span).min(1.0);
        self.base_lr
            * match self.kind {
                ScheduleKind::Constant => 1.0,
                ScheduleKind::Step => self
                    .gamma
                    .powi(((step - self.warmup_steps) / self.step_every) as i32),
                ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
                ScheduleKind::Linear => 1.0 - t,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_decay() {
        let s = Schedule {
            kind: ScheduleKind::Cosine,
            base_lr: 0.4,
            warmup_steps: 4,
            total_steps: 104,
            step_every: 1,
            gamma: 1.0,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12 && (s.lr(3) - 0.4).abs() < 1e-12);
        assert!((s.lr(54) - 0.2).abs() < 1e-12 && s.lr(104).abs() < 1e-12);
        let l = Schedule {
            kind: ScheduleKind::Linear,
            warmup_steps: 0,
            ..s
        };
        assert!((l.lr(26) - 0.3).abs() < 1e-12);
        let st = Schedule {
            kind: ScheduleKind::Step,
            warmup_steps: 0,
            step_every: 10,
            gamma: 0.1,
            ..s
        };
        assert!((st.lr(9) - 0.4).abs() < 1e-12 && (st.lr(25) - 0.004).abs() < 1e-12);
        assert!(Schedule { base_lr: 0.0, ..s }.validate().is_err());
        assert!(
            Schedule {
                step_every: 0,
                ..st
            }
            .validate()
            .is_err()
        );
    }
}

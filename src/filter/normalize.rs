//! MATLAB `normalize`: z-scores or rescaling to [0, 1].

use crate::error::{Error, Result};
use ndarray::{ArrayD, Axis};
use std::str::FromStr;

/// The statistic [`normalize`] applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Normalize {
    /// `(x − mean) / std`, with the sample standard deviation (n − 1), as
    /// MATLAB `normalize(A)`; a constant sample becomes zeros (as `zscore`).
    #[default]
    Zscore,
    /// `(x − min) / (max − min)`, as `normalize(A, 'range')`; a constant
    /// sample becomes zeros.
    Range,
    /// Leave the values as they are.
    None,
}

/// Which values share one set of statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormScope {
    /// Each column on its own (and each channel), as MATLAB's
    /// `normalize(A)` on a matrix: along the first dimension.
    #[default]
    Columns,
    /// All values of each channel together.
    Image,
}

impl FromStr for Normalize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zscore" => Ok(Normalize::Zscore),
            "range" => Ok(Normalize::Range),
            "none" => Ok(Normalize::None),
            _ => Err(Error::invalid(format!(
                "unknown normalisation '{s}': expected zscore, range or none"
            ))),
        }
    }
}

impl FromStr for NormScope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "columns" => Ok(NormScope::Columns),
            "image" => Ok(NormScope::Image),
            _ => Err(Error::invalid(format!(
                "unknown normalisation scope '{s}': expected columns or image"
            ))),
        }
    }
}

/// Normalises `x` (`[H, W]` or `[H, W, C]`) in place.
pub fn normalize(x: &mut ArrayD<f64>, how: Normalize, scope: NormScope) {
    if how == Normalize::None || x.is_empty() {
        return;
    }
    let apply = |values: &mut [f64]| match how {
        Normalize::Zscore => {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            let sd = var.sqrt();
            values
                .iter_mut()
                .for_each(|v| *v = if sd > 0.0 { (*v - mean) / sd } else { 0.0 });
        }
        Normalize::Range => {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            values
                .iter_mut()
                .for_each(|v| *v = if hi > lo { (*v - lo) / (hi - lo) } else { 0.0 });
        }
        Normalize::None => {}
    };
    // Gather each sample (a column of one channel, or a whole channel).
    let samples: Vec<ndarray::ArrayViewMutD<f64>> = match scope {
        NormScope::Columns => {
            let mut lanes = Vec::new();
            for lane in x.lanes_mut(Axis(0)) {
                lanes.push(lane.into_dyn());
            }
            lanes
        }
        NormScope::Image if x.ndim() == 3 => x.axis_iter_mut(Axis(2)).collect(),
        NormScope::Image => vec![x.view_mut()],
    };
    for mut s in samples {
        let mut values: Vec<f64> = s.iter().copied().collect();
        apply(&mut values);
        s.iter_mut().zip(values).for_each(|(d, v)| *d = v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    #[test]
    fn zscore_per_column_like_matlab() {
        // Columns [1 3 4] and [2 6 4]: means 8/3 and 4, sample sds sqrt(7/3) and 2.
        let mut x = arr2(&[[1.0, 2.0], [3.0, 6.0], [4.0, 4.0]]).into_dyn();
        normalize(&mut x, Normalize::Zscore, NormScope::Columns);
        let s = (7.0f64 / 3.0).sqrt();
        let want = [
            (1.0 - 8.0 / 3.0) / s,
            -1.0,
            (3.0 - 8.0 / 3.0) / s,
            1.0,
            (4.0 - 8.0 / 3.0) / s,
            0.0,
        ];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
    }

    #[test]
    fn range_and_constant_samples() {
        let mut x = arr2(&[[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]]).into_dyn();
        normalize(&mut x, Normalize::Range, NormScope::Columns);
        assert_eq!(x.as_slice().unwrap(), &[0.0, 0.0, 0.5, 0.0, 1.0, 0.0]);
        let mut y = arr2(&[[1.0, 2.0], [3.0, 4.0]]).into_dyn();
        normalize(&mut y, Normalize::Range, NormScope::Image);
        assert_eq!(y.as_slice().unwrap(), &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    }
}

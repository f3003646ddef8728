//! Fully connected layer (PyTorch `linear`): input `[N, in]`, weight
//! `[out, in]`, bias `[out]`, output `[N, out]`, `y = x · wᵀ + b`.

use super::matmul::{Mat, inner_parallelism, matmul};
use crate::error::{Error, Result};

/// Sizes of one linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub batch: usize,
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearShape {
    fn check(&self, x: usize, w: usize, bias: Option<usize>) -> Result<()> {
        let checks = [
            ("input", x, self.batch * self.in_features),
            ("weight", w, self.out_features * self.in_features),
            ("bias", bias.unwrap_or(self.out_features), self.out_features),
        ];
        match checks.iter().find(|(_, got, want)| got != want) {
            Some((what, got, want)) => Err(Error::invalid(format!(
                "linear: {what} has {got} elements, {self:?} needs {want}"
            ))),
            None => Ok(()),
        }
    }
}

/// `y = x · wᵀ + bias`; `y` holds `[N, out]`.
pub fn forward(
    s: &LinearShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    s.check(x.len(), w.len(), bias.map(<[f32]>::len))?;
    if s.batch == 0 || s.out_features == 0 || s.in_features == 0 {
        y.fill(0.0);
        return Ok(());
    }
    if let Some(b) = bias {
        y.chunks_exact_mut(s.out_features)
            .for_each(|row| row.copy_from_slice(b));
    }
    let lhs = Mat::rows(x, s.in_features);
    let rhs = Mat::cols(w, s.in_features);
    matmul(
        y,
        s.out_features,
        bias.is_some(),
        lhs,
        rhs,
        inner_parallelism(1),
    );
    Ok(())
}

/// Gradients of `Σ dy · linear(x, w, b)`, each computed when its buffer is
/// given: `dx = dy · w`, `dw = dyᵀ · x`, `db = Σ_n dy`.
pub fn backward(
    s: &LinearShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [dx, dw, db]: [Option<&mut [f32]>; 3],
) -> Result<()> {
    s.check(x.len(), w.len(), None)?;
    let (n, i, o) = (s.batch, s.in_features, s.out_features);
    if dy.len() != n * o {
        return Err(Error::invalid(format!(
            "linear backward: output gradient has {} elements, {s:?} needs {}",
            dy.len(),
            n * o
        )));
    }
    if n == 0 || i == 0 || o == 0 {
        for g in [dx, dw, db].into_iter().flatten() {
            g.fill(0.0);
        }
        return Ok(());
    }
    let par = inner_parallelism(1);
    if let Some(dx) = dx {
        matmul(dx, i, false, Mat::rows(dy, o), Mat::rows(w, i), par);
    }
    if let Some(dw) = dw {
        matmul(dw, i, false, Mat::cols(dy, o), Mat::rows(x, i), par);
    }
    if let Some(db) = db {
        db.fill(0.0);
        for row in dy.chunks_exact(o) {
            db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition() {
        let s = LinearShape {
            batch: 3,
            in_features: 5,
            out_features: 4,
        };
        let x: Vec<f32> = (0..15).map(|v| v as f32 * 0.1 - 0.7).collect();
        let w: Vec<f32> = (0..20).map(|v| (v as f32 * 0.37).sin()).collect();
        let b = [0.5, -1.0, 0.25, 2.0];
        let dy: Vec<f32> = (0..12).map(|v| (v as f32 * 0.61).cos()).collect();
        let mut y = vec![0.0; 12];
        forward(&s, &x, &w, Some(&b), &mut y).unwrap();
        let (mut dx, mut dw, mut db) = (vec![0.0; 15], vec![0.0; 20], vec![0.0; 4]);
        backward(
            &s,
            &x,
            &w,
            &dy,
            [Some(&mut dx), Some(&mut dw), Some(&mut db)],
        )
        .unwrap();
        for n in 0..3 {
            for o in 0..4 {
                let want: f32 = b[o] + (0..5).map(|i| x[n * 5 + i] * w[o * 5 + i]).sum::<f32>();
                assert!((y[n * 4 + o] - want).abs() < 1e-5);
            }
            for i in 0..5 {
                let want: f32 = (0..4).map(|o| dy[n * 4 + o] * w[o * 5 + i]).sum();
                assert!((dx[n * 5 + i] - want).abs() < 1e-5);
            }
        }
        for o in 0..4 {
            for i in 0..5 {
                let want: f32 = (0..3).map(|n| dy[n * 4 + o] * x[n * 5 + i]).sum();
                assert!((dw[o * 5 + i] - want).abs() < 1e-5);
            }
            let want: f32 = (0..3).map(|n| dy[n * 4 + o]).sum();
            assert!((db[o] - want).abs() < 1e-5);
        }
        assert!(forward(&s, &x[1..], &w, None, &mut y).is_err());
    }
}

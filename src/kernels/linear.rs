//! Fully connected layer (PyTorch `linear`): input `[N, in]`, weight
//! `[out, in]`, bias `[out]`, output `[N, out]`, `y = x · wᵀ + b`.

use super::matmul::{Mat, inner_parallelism, matmul};
use crate::error::{Error, Result};
use crate::simd::{Fma, Isa, dot};
use rayon::prelude::*;

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
    if s.batch <= GEMV_BATCH {
        // Each output row is a few dot products with the weight rows: in
        // parallel over blocks of outputs (the weights are read once, by
        // both cores; a GEMM would run single-threaded this narrow).
        let (i, o) = (s.in_features, s.out_features);
        y.par_chunks_mut(o).zip(x.par_chunks(i)).for_each(|(y, x)| {
            y.par_chunks_mut(GEMV_BLOCK)
                .enumerate()
                .for_each(|(block, out)| {
                    let first = block * GEMV_BLOCK;
                    let rows = &w[first * i..][..out.len() * i];
                    let bias = bias.map(|b| &b[first..][..out.len()]);
                    gemv_isa(Isa::best(), x, rows, bias, out);
                })
        });
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

/// Batches up to this size take [`gemv`] instead of the GEMM.
const GEMV_BATCH: usize = 4;
/// Outputs per parallel task of [`gemv`] (the last block of an image's
/// row may be shorter).
const GEMV_BLOCK: usize = 64;

/// `out[o] = bias[o] + Σ_k x[k] · rows[o, k]` for the `out.len()` rows of
/// `rows` (`[out.len(), x.len()]`).
#[inline(always)]
fn gemv<T: Fma>(x: &[T], rows: &[T], bias: Option<&[T]>, out: &mut [T]) {
    for (o, (v, row)) in out.iter_mut().zip(rows.chunks_exact(x.len())).enumerate() {
        *v = bias.map_or(T::zero(), |b| b[o]) + dot(x, row);
    }
}

crate::dispatch!(fn gemv_isa<T: Fma>(x: &[T], rows: &[T], bias: Option<&[T]>, out: &mut [T]) => gemv);

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

    #[test]
    fn small_batches_and_the_gemm_agree_with_the_definition() {
        // Batches 1-4 take the dot products (blocks of 64 outputs, the last
        // one short), 5 the GEMM; 70 inputs: wide chunks and a tail.
        let (i, o) = (70, 130);
        let w: Vec<f32> = (0..o * i).map(|v| (v as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..o).map(|v| (v as f32 * 0.11).cos()).collect();
        for batch in 1..=5 {
            let s = LinearShape {
                batch,
                in_features: i,
                out_features: o,
            };
            let x: Vec<f32> = (0..batch * i).map(|v| (v as f32 * 0.23).cos()).collect();
            for bias in [None, Some(&b[..])] {
                let mut y = vec![f32::NAN; batch * o];
                forward(&s, &x, &w, bias, &mut y).unwrap();
                for n in 0..batch {
                    for k in 0..o {
                        let dot: f64 = (0..i)
                            .map(|j| x[n * i + j] as f64 * w[k * i + j] as f64)
                            .sum();
                        let want = dot + bias.map_or(0.0, |b| b[k] as f64);
                        let got = y[n * o + k] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "batch {batch} ({n}, {k}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

//! Batch normalisation over NCHW data (PyTorch `batch_norm`), per channel:
//! `y = (x − mean) · invstd · γ + β` with `invstd = 1 / sqrt(var + eps)`.
//! Statistics are summed per plane in float32 lanes, per channel in
//! float64, in a fixed order (deterministic for any thread count).

use crate::simd::{Fma, Isa};
use rayon::prelude::*;

/// Data layout: `batch` images of `channels` planes of `plane` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Layout {
    /// Values per channel (`batch · plane`).
    pub fn per_channel(&self) -> usize {
        self.batch * self.plane
    }

    /// Planes handed to one task: enough values to amortise it.
    fn planes_per_task(&self) -> usize {
        (MIN_TASK / self.plane.max(1)).max(1)
    }

    /// `f(plane index, plane)` for every `(image, channel)` plane of `x`,
    /// in parallel; the results per channel summed in float64 in image
    /// order (deterministic).
    fn channel_sums<const K: usize>(
        &self,
        x: &[f32],
        f: impl Fn(usize, &[f32]) -> [f32; K] + Sync,
    ) -> Vec<[f64; K]> {
        let planes: Vec<[f32; K]> = x
            .par_chunks(self.plane)
            .enumerate()
            .with_min_len(self.planes_per_task())
            .map(|(i, plane)| f(i, plane))
            .collect();
        let mut sums = vec![[0f64; K]; self.channels];
        for (i, p) in planes.iter().enumerate() {
            let s = &mut sums[i % self.channels];
            for k in 0..K {
                s[k] += p[k] as f64;
            }
        }
        sums
    }

    /// The `batch · channels · plane` values of `f(plane index, output
    /// plane)` for every plane, in parallel.
    fn each_plane(&self, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
        let per_task = self.planes_per_task();
        let len = self.batch * self.channels * self.plane;
        super::par_collect(len, per_task * self.plane, |t, planes| {
            for (k, out) in planes.chunks_exact_mut(self.plane.max(1)).enumerate() {
                f(t * per_task + k, out);
            }
        })
    }
}

/// Values one parallel task should cover at least.
const MIN_TASK: usize = 1 << 13;

/// Per-channel mean and biased variance (divided by `batch · plane`).
/// Planes are summed in float32 lanes around a per-channel reference value
/// (the channel's first value, which keeps the squares small), channels in
/// float64.
pub fn batch_stats(l: &Layout, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let m = l.per_channel() as f64;
    let reference: Vec<f32> = (0..l.channels).map(|c| x[c * l.plane]).collect();
    let sums = l.channel_sums(x, |i, plane| {
        let mut out = [0f32; 2];
        centered_moments_isa(Isa::best(), plane, reference[i % l.channels], &mut out);
        out
    });
    sums.iter()
        .zip(&reference)
        .map(|(&[s1, s2], &r)| {
            let d = s1 / m;
            ((r as f64 + d) as f32, (s2 / m - d * d).max(0.0) as f32)
        })
        .unzip()
}

/// Per channel, the affine map of the normalisation:
/// `y = x · scale + shift` with `scale = invstd · γ`, `shift = β − mean · scale`.
fn scale_shift(
    mean: &[f32],
    invstd: &[f32],
    affine: Option<(&[f32], &[f32])>,
    c: usize,
) -> (f32, f32) {
    let (g, b) = affine.map_or((1.0, 0.0), |(g, b)| (g[c], b[c]));
    let scale = invstd[c] * g;
    (scale, b - mean[c] * scale)
}

/// `y = (x − mean) · invstd · γ + β` (γ = 1, β = 0 when absent), followed
/// by `max(y, 0)` when `relu` (the fused `relu(batch_norm(x))`).
pub fn normalize(
    l: &Layout,
    x: &[f32],
    mean: &[f32],
    invstd: &[f32],
    affine: Option<(&[f32], &[f32])>,
    relu: bool,
) -> Vec<f32> {
    l.each_plane(|i, out| {
        let (scale, shift) = scale_shift(mean, invstd, affine, i % l.channels);
        let x = &x[i * l.plane..][..l.plane];
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        affine_max_isa(Isa::best(), x, scale, shift, floor, out);
    })
}

/// Gradients of `Σ dy · batch_norm(x)` (or of `Σ dy · relu(batch_norm(x))`
/// when `relu`: `dy` counts only where the normalised value is positive):
/// `dγ = Σ dy · x̂`, `dβ = Σ dy`, and `dx` (when `want_dx`). With batch
/// statistics (`training`) the mean and variance depend on `x`:
/// `dx = γ · invstd · (dy − Σdy / M − x̂ · Σ(dy · x̂) / M)`;
/// with running statistics `dx = γ · invstd · dy`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    l: &Layout,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    invstd: &[f32],
    affine: Option<(&[f32], &[f32])>,
    training: bool,
    relu: bool,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    // The ReLU's mask as (scale, shift): pass where x · scale + shift > 0.
    let mask = |c: usize| relu.then(|| scale_shift(mean, invstd, affine, c));
    let sums = l.channel_sums(dy, |i, g| {
        let c = i % l.channels;
        let mut out = [0f32; 2];
        let x = &x[i * l.plane..][..l.plane];
        centered_dot_isa(Isa::best(), x, g, mean[c], mask(c), &mut out);
        out
    });
    let sum_dy: Vec<f64> = sums.iter().map(|s| s[0]).collect();
    let sum_dy_xhat: Vec<f64> = sums
        .iter()
        .zip(invstd)
        .map(|(s, &k)| s[1] * k as f64)
        .collect();
    let dx = want_dx.then(|| {
        let m = l.per_channel() as f64;
        l.each_plane(|i, out| {
            let c = i % l.channels;
            let k = affine.map_or(1.0, |(g, _)| g[c]) * invstd[c];
            let (xs, gs) = (&x[i * l.plane..][..l.plane], &dy[i * l.plane..][..l.plane]);
            // k · (g − mean_dy − (x − mean) · invstd · mean_dy_xhat)
            //   = k · g + a · x + b   (a = b = 0 with running statistics)
            let (a, b) = if training {
                let mean_dy = (sum_dy[c] / m) as f32;
                let mean_dy_xhat = (sum_dy_xhat[c] / m) as f32;
                let a = -k * invstd[c] * mean_dy_xhat;
                (a, -k * mean_dy - a * mean[c])
            } else {
                (0.0, 0.0)
            };
            axpb_isa(Isa::best(), gs, k, xs, a, b, mask(c), out);
        })
    });
    (
        dx,
        sum_dy_xhat.iter().map(|&v| v as f32).collect(),
        sum_dy.iter().map(|&v| v as f32).collect(),
    )
}

const LANES: usize = 16;

/// `out = [Σ (x − r), Σ (x − r)²]`, in 16 float32 lanes.
#[inline(always)]
fn centered_moments<T: Fma>(x: &[T], r: T, out: &mut [T; 2]) {
    let mut s1 = [T::zero(); LANES];
    let mut s2 = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let (mut t1, mut t2) = (T::zero(), T::zero());
    for &v in chunks.remainder() {
        let d = v - r;
        t1 = t1 + d;
        t2 = d.fma(d, t2);
    }
    for chunk in chunks {
        for ((a, b), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(chunk) {
            let d = v - r;
            *a = *a + d;
            *b = d.fma(d, *b);
        }
    }
    out[0] = s1.iter().fold(t1, |s, &v| s + v);
    out[1] = s2.iter().fold(t2, |s, &v| s + v);
}

/// `out = [Σ g, Σ (x − mean) · g]`, in 16 float32 lanes; with a mask
/// `(scale, shift)`, `g` counts only where `x · scale + shift > 0`.
#[inline(always)]
fn centered_dot<T: Fma>(x: &[T], g: &[T], mean: T, mask: Option<(T, T)>, out: &mut [T; 2]) {
    let mut s1 = [T::zero(); LANES];
    let mut s2 = [T::zero(); LANES];
    let (xc, gc) = (x.chunks_exact(LANES), g.chunks_exact(LANES));
    let (mut t1, mut t2) = (T::zero(), T::zero());
    let pass = |v: T, g: T| match mask {
        Some((s, t)) if v.fma(s, t) <= T::zero() => T::zero(),
        _ => g,
    };
    for (&v, &g) in xc.remainder().iter().zip(gc.remainder()) {
        let g = pass(v, g);
        t1 = t1 + g;
        t2 = (v - mean).fma(g, t2);
    }
    if mask.is_some() {
        for (xs, gs) in xc.zip(gc) {
            for (((a, b), &v), &g) in s1.iter_mut().zip(s2.iter_mut()).zip(xs).zip(gs) {
                let g = pass(v, g);
                *a = *a + g;
                *b = (v - mean).fma(g, *b);
            }
        }
    } else {
        for (xs, gs) in xc.zip(gc) {
            for (((a, b), &v), &g) in s1.iter_mut().zip(s2.iter_mut()).zip(xs).zip(gs) {
                *a = *a + g;
                *b = (v - mean).fma(g, *b);
            }
        }
    }
    out[0] = s1.iter().fold(t1, |s, &v| s + v);
    out[1] = s2.iter().fold(t2, |s, &v| s + v);
}

/// `out = k · u' + a · v + b`, where `u' = u`, or with a mask
/// `(scale, shift)`, `u` where `v · scale + shift > 0` and 0 elsewhere.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn axpb<T: Fma>(u: &[T], k: T, v: &[T], a: T, b: T, mask: Option<(T, T)>, out: &mut [T]) {
    match mask {
        None => {
            for ((o, &u), &v) in out.iter_mut().zip(u).zip(v) {
                *o = u.fma(k, v.fma(a, b));
            }
        }
        Some((s, t)) => {
            for ((o, &u), &v) in out.iter_mut().zip(u).zip(v) {
                let u = if v.fma(s, t) > T::zero() {
                    u
                } else {
                    T::zero()
                };
                *o = u.fma(k, v.fma(a, b));
            }
        }
    }
}

/// `out = max(x · scale + shift, floor)`.
#[inline(always)]
fn affine_max<T: Fma>(x: &[T], scale: T, shift: T, floor: T, out: &mut [T]) {
    for (o, &v) in out.iter_mut().zip(x) {
        let y = v.fma(scale, shift);
        *o = if y > floor { y } else { floor };
    }
}

crate::dispatch!(fn centered_moments_isa<T: Fma>(x: &[T], r: T, out: &mut [T; 2]) => centered_moments);
crate::dispatch!(fn centered_dot_isa<T: Fma>(x: &[T], g: &[T], mean: T, mask: Option<(T, T)>, out: &mut [T; 2]) => centered_dot);
crate::dispatch!(fn axpb_isa<T: Fma>(u: &[T], k: T, v: &[T], a: T, b: T, mask: Option<(T, T)>, out: &mut [T]) => axpb);
crate::dispatch!(fn affine_max_isa<T: Fma>(x: &[T], scale: T, shift: T, floor: T, out: &mut [T]) => affine_max);

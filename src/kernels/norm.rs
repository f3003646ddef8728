//! Batch normalisation over NCHW data (PyTorch `batch_norm`), per channel:
//! `y = (x − mean) · invstd · γ + β` with `invstd = 1 / sqrt(var + eps)`.
//! Statistics are summed in float64; one parallel task per channel.

use rayon::prelude::*;

/// Data layout: `batch` images of `channels` planes of `plane` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Layout {
    /// The values of channel `c` in image `n`.
    fn slice<'a>(&self, x: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &x[(n * self.channels + c) * self.plane..][..self.plane]
    }

    /// Values per channel (`batch · plane`).
    pub fn per_channel(&self) -> usize {
        self.batch * self.plane
    }

    /// `Σ f(x[n, c, ·])` over the images, in float64, for every channel.
    fn channel_sums(&self, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
        (0..self.channels)
            .into_par_iter()
            .map(|c| (0..self.batch).map(|n| f(n, c)).sum())
            .collect()
    }
}

/// Per-channel mean and biased variance (divided by `batch · plane`).
pub fn batch_stats(l: &Layout, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let m = l.per_channel() as f64;
    let mean = l.channel_sums(|n, c| l.slice(x, n, c).iter().map(|&v| v as f64).sum());
    let mean: Vec<f64> = mean.into_iter().map(|s| s / m).collect();
    let var = l.channel_sums(|n, c| {
        l.slice(x, n, c)
            .iter()
            .map(|&v| (v as f64 - mean[c]).powi(2))
            .sum()
    });
    (
        mean.iter().map(|&v| v as f32).collect(),
        var.iter().map(|&v| (v / m) as f32).collect(),
    )
}

/// `y = (x − mean) · invstd · γ + β` (γ = 1, β = 0 when absent).
pub fn normalize(
    l: &Layout,
    x: &[f32],
    mean: &[f32],
    invstd: &[f32],
    affine: Option<(&[f32], &[f32])>,
    y: &mut [f32],
) {
    y.par_chunks_mut(l.plane).enumerate().for_each(|(i, out)| {
        let c = i % l.channels;
        let (g, b) = affine.map_or((1.0, 0.0), |(g, b)| (g[c], b[c]));
        let scale = invstd[c] * g;
        let shift = b - mean[c] * scale;
        for (o, &v) in out.iter_mut().zip(&x[i * l.plane..][..l.plane]) {
            *o = v * scale + shift;
        }
    });
}

/// Gradients of `Σ dy · batch_norm(x)`: `dγ = Σ dy · x̂`, `dβ = Σ dy`, and
/// `dx` (when given). With batch statistics (`training`) the mean and
/// variance depend on `x`:
/// `dx = γ · invstd · (dy − Σdy / M − x̂ · Σ(dy · x̂) / M)`;
/// with running statistics `dx = γ · invstd · dy`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    l: &Layout,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    invstd: &[f32],
    gamma: Option<&[f32]>,
    training: bool,
    dx: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let sum_dy = l.channel_sums(|n, c| l.slice(dy, n, c).iter().map(|&v| v as f64).sum());
    let sum_dy_xhat = l.channel_sums(|n, c| {
        let (xs, gs) = (l.slice(x, n, c), l.slice(dy, n, c));
        let dot: f64 = xs
            .iter()
            .zip(gs)
            .map(|(&v, &g)| (v - mean[c]) as f64 * g as f64)
            .sum();
        dot * invstd[c] as f64
    });
    if let Some(dx) = dx {
        let m = l.per_channel() as f64;
        dx.par_chunks_mut(l.plane).enumerate().for_each(|(i, out)| {
            let c = i % l.channels;
            let k = gamma.map_or(1.0, |g| g[c]) * invstd[c];
            let (xs, gs) = (&x[i * l.plane..][..l.plane], &dy[i * l.plane..][..l.plane]);
            if !training {
                out.iter_mut().zip(gs).for_each(|(o, &g)| *o = k * g);
                return;
            }
            let mean_dy = (sum_dy[c] / m) as f32;
            let mean_dy_xhat = (sum_dy_xhat[c] / m) as f32;
            for ((o, &v), &g) in out.iter_mut().zip(xs).zip(gs) {
                let xhat = (v - mean[c]) * invstd[c];
                *o = k * (g - mean_dy - xhat * mean_dy_xhat);
            }
        });
    }
    (
        sum_dy_xhat.iter().map(|&v| v as f32).collect(),
        sum_dy.iter().map(|&v| v as f32).collect(),
    )
}

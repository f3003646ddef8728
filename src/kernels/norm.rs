//! Batch normalisation over NCHW data (PyTorch `batch_norm`), per channel:
//! `y = (x − mean) · invstd · γ + β` with `invstd = 1 / sqrt(var + eps)`.
//! Statistics are summed per channel in 16 float32 lanes, flushed into a
//! float64 total every [`FLUSH`] values, in a fixed order (deterministic
//! for any thread count). Training's passes give each task whole
//! channels: their sums, then at once their elementwise pass (normalised
//! values forward, input gradient backward) while the channel's planes
//! are still in cache; on planes under [`SMALL_PLANE`] values, all sums
//! first, then one element-wise pass over runs of whole planes.
//! Normalising with running statistics (evaluation)
//! gives each task a run of planes and one vectorised kernel call, so
//! small planes (4×4, 7×7) cost no per-plane overhead.

use crate::simd::{Fma, Isa};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

    /// `f(c)` for every channel `c`, in parallel, enough channels per task
    /// to amortise it.
    fn each_channel<R: Send>(&self, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
        let per_task = (MIN_TASK / self.per_channel().max(1)).max(1);
        (0..self.channels)
            .into_par_iter()
            .with_min_len(per_task)
            .map(f)
            .collect()
    }

    /// Planes per parallel task of the element-wise passes, and the values
    /// of such a run of whole planes.
    fn runs(&self) -> (usize, usize) {
        let per_task = (MIN_TASK / self.plane.max(1)).max(1);
        (per_task, per_task * self.plane.max(1))
    }
}

/// Values per plane from which [`backward`] applies an output mask in
/// each channel's passes instead of in a pass of its own (one thread,
/// batch 16: 960 channels on 7 × 7 took 0.69 ms that way against 0.62;
/// on 14 × 14 and 28 × 28 it saves 14–16 %).
const MASK_IN_CHANNEL: usize = 128;

/// Values per plane below which batch norm with batch statistics sums
/// every channel first and then makes its element-wise pass (normalised
/// values, input gradient) over runs of whole planes, instead of each
/// channel's pass right after its sums: a channel's tiny planes, a whole
/// image apart, cost more one at a time than a second read of the tensor.
/// One thread, batch 32, ms, per channel → separate pass: forward, 432
/// channels of 4 × 4 0.171 → 0.117, 480 of 7 × 7 0.447 → 0.353; backward
/// with an output mask, 4 × 4 0.226 → 0.207, 7 × 7 0.852 → 0.831. On
/// 8 × 8 that hot-cache harness favoured the channel passes backward
/// (0.342 against 0.398), but whole training steps of the Fashion-MNIST
/// model (8 × 8 and 4 × 4 planes) were faster with 128 than with 64
/// (103.8–114.9 against 109.5–117.1 ms); 512 gained nothing more.
const SMALL_PLANE: usize = 128;

/// Values one parallel task should cover at least.
const MIN_TASK: usize = 1 << 13;

/// Values summed in float32 lanes before they are added to the float64
/// total.
const FLUSH: usize = 1 << 10;

/// Per-channel mean and biased variance (divided by `batch · plane`),
/// summed around a per-channel reference value (the channel's first value,
/// which keeps the squares small).
pub fn batch_stats(l: &Layout, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    l.each_channel(|c| {
        let r = x[c * l.plane];
        let mut s = [0f64; 2];
        channel_moments_isa(Isa::best(), x, *l, c, r, &mut s);
        mean_var(l, r, s)
    })
    .into_iter()
    .unzip()
}

/// `1 / sqrt(var + eps)` per channel.
pub fn inv_std(var: &[f32], eps: f32) -> Vec<f32> {
    var.iter().map(|&v| channel_inv_std(v, eps)).collect()
}

/// [`inv_std`] of one channel's variance.
fn channel_inv_std(var: f32, eps: f32) -> f32 {
    1.0 / (var + eps).sqrt()
}

/// The mean and biased variance of a channel of `l` from its moments
/// around `r`, `s = [Σ (x − r), Σ (x − r)²]`.
fn mean_var(l: &Layout, r: f32, s: [f64; 2]) -> (f32, f32) {
    let m = l.per_channel() as f64;
    let d = s[0] / m;
    ((r as f64 + d) as f32, (s[1] / m - d * d).max(0.0) as f32)
}

/// Batch normalisation with batch statistics: per channel, its mean and
/// variance (as [`batch_stats`]) and right away, while the channel's
/// planes are in cache, its normalised values (as [`normalize`] with
/// `invstd = 1 / sqrt(var + eps)`); a second pass over the whole tensor
/// read them from memory again. Planes under [`SMALL_PLANE`] values take
/// [`batch_stats`] and then [`normalize`]; the results are the same.
/// Returns `(y, mean, var)`.
pub fn normalize_batch(
    l: &Layout,
    x: &[f32],
    eps: f32,
    affine: Option<(&[f32], &[f32])>,
    relu: bool,
    residual: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
    let len = l.batch * l.channels * l.plane;
    assert_eq!(
        x.len(),
        len,
        "normalize_batch: {} values for {l:?}",
        x.len()
    );
    if let Some(r) = residual {
        assert_eq!(
            r.len(),
            len,
            "normalize_batch: residual of {} values for {l:?}",
            r.len()
        );
    }
    if l.plane < SMALL_PLANE {
        let (mean, var) = batch_stats(l, x);
        let y = normalize(l, x, &mean, &inv_std(&var, eps), affine, relu, residual);
        return (y, mean, var);
    }
    let mut y = Vec::with_capacity(len);
    let out = Planes::new(&mut y.spare_capacity_mut()[..len], l);
    let stats = l.each_channel(|c| {
        let r = x[c * l.plane];
        let mut stats = (0.0, 0.0);
        let map = |s: [f64; 2]| {
            stats = mean_var(l, r, s);
            channel_scale_shift(stats.0, channel_inv_std(stats.1, eps), affine, c)
        };
        // One task per channel: the planes it writes are its own.
        channel_normalize_isa(Isa::best(), x, residual, out, *l, c, r, &mut { map }, floor);
        stats
    });
    // SAFETY: the tasks cover every channel, and `channel_normalize`
    // writes every value of each of its channel's planes.
    unsafe { y.set_len(len) };
    let (mean, var) = stats.into_iter().unzip();
    (y, mean, var)
}

/// Per channel, the affine map of the normalisation `(scale, shift)`:
/// `y = x · scale + shift` with `scale = invstd · γ`, `shift = β − mean · scale`.
fn scale_shift(mean: &[f32], invstd: &[f32], affine: Option<(&[f32], &[f32])>) -> Vec<(f32, f32)> {
    (0..mean.len())
        .map(|c| channel_scale_shift(mean[c], invstd[c], affine, c))
        .collect()
}

/// [`scale_shift`] of channel `c` alone.
fn channel_scale_shift(
    mean: f32,
    invstd: f32,
    affine: Option<(&[f32], &[f32])>,
    c: usize,
) -> (f32, f32) {
    let (g, b) = affine.map_or((1.0, 0.0), |(g, b)| (g[c], b[c]));
    let scale = invstd * g;
    (scale, b - mean * scale)
}

/// `y = (x − mean) · invstd · γ + β` (γ = 1, β = 0 when absent), plus
/// `residual` (laid out like `x`) when given, followed by `max(·, 0)` when
/// `relu`: the fused `relu(batch_norm(x))` and `relu(batch_norm(x) +
/// residual)`, each value rounded as the separate operations round it.
pub fn normalize(
    l: &Layout,
    x: &[f32],
    mean: &[f32],
    invstd: &[f32],
    affine: Option<(&[f32], &[f32])>,
    relu: bool,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let maps = scale_shift(mean, invstd, affine);
    let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
    let len = l.batch * l.channels * l.plane;
    assert_eq!(x.len(), len, "normalize: {} values for {l:?}", x.len());
    if let Some(r) = residual {
        assert_eq!(
            r.len(),
            len,
            "normalize: residual of {} values for {l:?}",
            r.len()
        );
    }
    let (per_task, run) = l.runs();
    let mut y = Vec::with_capacity(len);
    y.spare_capacity_mut()[..len]
        .par_chunks_mut(run)
        .enumerate()
        .for_each(|(t, out)| {
            let first = t * per_task;
            let x = &x[first * l.plane..][..out.len()];
            let r = residual.map(|r| &r[first * l.plane..][..out.len()]);
            affine_max_isa(Isa::best(), x, r, *l, first, &maps, floor, out);
        });
    // SAFETY: `len` and `run` are multiples of the plane, so every task's
    // `out` is a run of whole planes, as long as its `x` (and residual),
    // and `affine_max` writes every value of such a run; the tasks cover
    // all `len` values.
    unsafe { y.set_len(len) };
    y
}

/// What [`backward`] computes: `[C]` weight and bias gradients, `dx` when
/// wanted, and `dy` back unchanged when its buffer did not become `dx`.
pub struct Gradients {
    pub dx: Option<Vec<f32>>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
    pub dy: Option<Vec<f32>>,
}

/// Gradients of `Σ dy · batch_norm(x)` (or of `Σ dy · relu(batch_norm(x))`
/// when `relu`: `dy` counts only where the normalised value is positive):
/// `dγ = Σ dy · x̂`, `dβ = Σ dy`, and `dx` (when `want_dx`: in `dy`'s
/// buffer, or with `dx_into`, a buffer as long as `dy` with any contents,
/// in that one). With batch
/// statistics (`training`) the mean and variance depend on `x`:
/// `dx = γ · invstd · (dy − Σdy / M − x̂ · Σ(dy · x̂) / M)`;
/// with running statistics `dx = γ · invstd · dy`. With `output_mask`
/// (laid out like `dy`: the output of a ReLU after the normalisation and
/// a residual add), `dy` first becomes 0 where the mask is not positive,
/// in its buffer, which then also serves as the residual's gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    l: &Layout,
    x: &[f32],
    mut dy: Vec<f32>,
    mean: &[f32],
    invstd: &[f32],
    affine: Option<(&[f32], &[f32])>,
    training: bool,
    relu: bool,
    want_dx: bool,
    dx_into: Option<Vec<f32>>,
    output_mask: Option<&[f32]>,
) -> Gradients {
    // The ReLU's mask as (scale, shift): pass where x · scale + shift > 0.
    let mask = relu.then(|| scale_shift(mean, invstd, affine));
    // The output mask goes with each channel's passes on planes of at
    // least `MASK_IN_CHANNEL` values; on smaller ones a loop per plane
    // costs more than a pass of its own over the whole buffer.
    let output_mask = match output_mask {
        Some(y) if l.plane < MASK_IN_CHANNEL => {
            super::pass_where_positive(&mut dy, y, MIN_TASK);
            None
        }
        mask => mask,
    };
    // dx = k · g + a · x + b per channel, where
    // k · (g − mean_dy − (x − mean) · invstd · mean_dy_xhat)
    //   = k · g + a · x + b   (a = b = 0 with running statistics),
    // from the channel's sums `[Σ g, Σ (x − mean) · g]`.
    let m = l.per_channel() as f64;
    let coef = |c: usize, s: [f64; 2]| -> [f32; 3] {
        let k = affine.map_or(1.0, |(g, _)| g[c]) * invstd[c];
        if !training {
            return [k, 0.0, 0.0];
        }
        let mean_dy = (s[0] / m) as f32;
        let mean_dy_xhat = (s[1] * invstd[c] as f64 / m) as f32;
        let a = -k * invstd[c] * mean_dy_xhat;
        [k, a, -k * mean_dy - a * mean[c]]
    };
    // Each channel's input gradient right after its sums, while its
    // planes are still in cache (a second pass over the whole tensor
    // read them from memory again).
    let channel = |c: usize, g: Planes<f32>, out: Option<Planes<f32>>| {
        let mut s = [0f64; 2];
        let mask = mask.as_ref().map(|m| m[c]);
        // One task per channel: the planes it touches are its own.
        channel_backward_isa(
            Isa::best(),
            x,
            output_mask,
            g,
            out,
            *l,
            c,
            mean[c],
            mask,
            &|s| coef(c, s),
            &mut s,
        );
        s
    };
    if let Some(dx) = &dx_into {
        assert_eq!(
            dx.len(),
            dy.len(),
            "batch norm backward: dx_into as long as dy"
        );
    }
    let (sums, dx, dy) = match (want_dx, dx_into) {
        (false, _) => {
            let g = Planes::new(&mut dy, l);
            (l.each_channel(|c| channel(c, g, None)), None, Some(dy))
        }
        // Small planes: every channel's sums, then the input gradient over
        // runs of whole planes in a pass of its own (see `SMALL_PLANE`).
        (true, into) if l.plane < SMALL_PLANE => {
            let g = Planes::new(&mut dy, l);
            let sums = l.each_channel(|c| channel(c, g, None));
            let coefs: Vec<[f32; 3]> = sums.iter().enumerate().map(|(c, &s)| coef(c, s)).collect();
            let masks = mask.as_deref();
            match into {
                None => {
                    input_grad_runs(l, x, None, &mut dy, &coefs, masks);
                    (sums, Some(dy), None)
                }
                Some(mut dx) => {
                    input_grad_runs(l, x, Some(&dy), &mut dx, &coefs, masks);
                    (sums, Some(dx), Some(dy))
                }
            }
        }
        (true, None) => {
            let g = Planes::new(&mut dy, l);
            (l.each_channel(|c| channel(c, g, Some(g))), Some(dy), None)
        }
        (true, Some(mut dx)) => {
            let (g, out) = (Planes::new(&mut dy, l), Planes::new(&mut dx, l));
            (
                l.each_channel(|c| channel(c, g, Some(out))),
                Some(dx),
                Some(dy),
            )
        }
    };
    Gradients {
        dx,
        dgamma: sums
            .iter()
            .zip(invstd)
            .map(|(s, &k)| (s[1] * k as f64) as f32)
            .collect(),
        dbeta: sums.iter().map(|s| s[0] as f32).collect(),
        dy,
    }
}

/// The input gradient `out = k · g' + a · x + b` (see [`axpb`]) with each
/// channel's `coefs` and mask, in parallel over runs of whole planes; `g`
/// is `out` itself when not given.
fn input_grad_runs(
    l: &Layout,
    x: &[f32],
    g: Option<&[f32]>,
    out: &mut [f32],
    coefs: &[[f32; 3]],
    masks: Option<&[(f32, f32)]>,
) {
    let (per_task, run) = l.runs();
    out.par_chunks_mut(run).enumerate().for_each(|(t, out)| {
        let at = t * run;
        let g = g.map(|g| &g[at..][..out.len()]);
        let x = &x[at..][..out.len()];
        axpb_planes_isa(Isa::best(), out, g, x, *l, t * per_task, coefs, masks);
    });
}

/// A buffer laid out as a [`Layout`] that parallel tasks share, each
/// reading and writing only the planes of its own channels.
#[derive(Clone, Copy)]
pub(crate) struct Planes<T> {
    data: *mut T,
    l: Layout,
}

// SAFETY: tasks reach the buffer only through `plane` and `plane_mut`,
// whose callers promise that no two tasks touch the same channel.
unsafe impl<T: Send> Send for Planes<T> {}
unsafe impl<T: Send> Sync for Planes<T> {}

impl<T> Planes<T> {
    /// `data` (exactly `l`'s values), borrowed for as long as the result
    /// is used.
    fn new(data: &mut [T], l: &Layout) -> Planes<T> {
        assert_eq!(
            data.len(),
            l.batch * l.channels * l.plane,
            "batch norm: buffer of {} values for {l:?}",
            data.len()
        );
        Planes {
            data: data.as_mut_ptr(),
            l: *l,
        }
    }

    /// Plane `(n, c)`.
    ///
    /// # Safety
    /// No other reference to this plane may be in use while it is.
    unsafe fn plane<'a>(self, n: usize, c: usize) -> &'a [T] {
        assert!(n < self.l.batch && c < self.l.channels);
        // SAFETY: inside the buffer (checked above); exclusive by the
        // caller's promise.
        unsafe {
            std::slice::from_raw_parts(
                self.data.add((n * self.l.channels + c) * self.l.plane),
                self.l.plane,
            )
        }
    }

    /// Plane `(n, c)`, writable.
    ///
    /// # Safety
    /// No other reference to this plane may exist while it is in use.
    #[allow(clippy::mut_from_ref)]
    unsafe fn plane_mut<'a>(self, n: usize, c: usize) -> &'a mut [T] {
        assert!(n < self.l.batch && c < self.l.channels);
        // SAFETY: as in `plane`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.data.add((n * self.l.channels + c) * self.l.plane),
                self.l.plane,
            )
        }
    }
}

const LANES: usize = 16;

/// Element types the statistics can be summed in: float32 lanes, float64
/// totals.
pub(crate) trait Wide: Fma + Into<f64> {}
impl<T: Fma + Into<f64>> Wide for T {}

/// `[Σ f0(x, y), Σ f1(x, y)]` over the values of one channel, whose
/// planes in image `n` are `planes(n)` (`x`'s and `y`'s, of `l.plane`
/// values): each sum in 16 lanes, added to a float64 total every
/// [`FLUSH`] values and at the end; plane tails go to the totals
/// directly. On planes of at least [`ALTERNATE`] values the two sums take
/// each plane in turn, the second while the plane is in cache (one pass
/// over the channel); on smaller ones, where that costs more than it
/// saves, one pass per sum. The sums are the same either way.
#[inline(always)]
fn channel_sums<'a, T: Wide + 'a>(
    l: Layout,
    planes: impl Fn(usize) -> (&'a [T], &'a [T]),
    f0: impl Fn(T, T) -> T,
    f1: impl Fn(T, T) -> T,
) -> [f64; 2] {
    if l.plane >= ALTERNATE {
        sum_planes(l, &planes, &f0, Some(&f1))
    } else {
        let [s0, _] = sum_planes(l, &planes, &f0, None::<&fn(T, T) -> T>);
        let [s1, _] = sum_planes(l, &planes, &f1, None::<&fn(T, T) -> T>);
        [s0, s1]
    }
}

/// Values per plane from which [`channel_sums`] alternates its two sums
/// plane by plane (batch 32, 2 threads: batch statistics on 28 × 28
/// planes 0.37–0.39 → 0.32–0.33 ms, gradient sums and input gradient
/// 1.23–1.29 → 1.14–1.17 ms; on 7 × 7 planes 0.11–0.13 → 0.15 and 0.33 →
/// 0.45 ms).
const ALTERNATE: usize = 256;

/// `Σ f0(x, y)` and, when given, `Σ f1(x, y)` over one channel, plane by
/// plane (see [`channel_sums`]; LLVM vectorises a loop of one sum, not
/// one loop adding to both, which ran 3× slower).
#[inline(always)]
fn sum_planes<'a, T: Wide + 'a, F0: Fn(T, T) -> T, F1: Fn(T, T) -> T>(
    l: Layout,
    planes: &impl Fn(usize) -> (&'a [T], &'a [T]),
    f0: &F0,
    f1: Option<&F1>,
) -> [f64; 2] {
    let lanes = |s: &[T; LANES]| -> f64 { s.iter().fold(T::zero(), |acc, &v| acc + v).into() };
    let mut total = [0f64; 2];
    let mut s = [[T::zero(); LANES]; 2];
    let mut run = 0;
    for n in 0..l.batch {
        let (xp, yp) = planes(n);
        add_plane(&mut s[0], &mut total[0], xp, yp, f0);
        if let Some(f1) = f1 {
            add_plane(&mut s[1], &mut total[1], xp, yp, f1);
        }
        run += l.plane;
        if run >= FLUSH {
            for (s, total) in s.iter_mut().zip(&mut total) {
                *total += lanes(s);
                *s = [T::zero(); LANES];
            }
            run = 0;
        }
    }
    [total[0] + lanes(&s[0]), total[1] + lanes(&s[1])]
}

/// Adds `f(x[i], y[i])` over one plane to the lanes `s` (lane `i % 16`),
/// the tail past the last whole block to `total`.
#[inline(always)]
fn add_plane<T: Wide>(
    s: &mut [T; LANES],
    total: &mut f64,
    x: &[T],
    y: &[T],
    f: impl Fn(T, T) -> T,
) {
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    for (&a, &b) in xc.remainder().iter().zip(yc.remainder()) {
        *total += f(a, b).into();
    }
    for (a, b) in xc.zip(yc) {
        let a: &[T; LANES] = a.try_into().expect("block");
        let b: &[T; LANES] = b.try_into().expect("block");
        for k in 0..LANES {
            s[k] = s[k] + f(a[k], b[k]);
        }
    }
}

/// Plane `(n, c)` of `x`, laid out as `l`.
#[inline(always)]
fn plane_of<T>(x: &[T], l: Layout, n: usize, c: usize) -> &[T] {
    &x[(n * l.channels + c) * l.plane..][..l.plane]
}

/// `out = [Σ (x − r), Σ (x − r)²]` over channel `c`.
#[inline(always)]
fn channel_moments<T: Wide>(x: &[T], l: Layout, c: usize, r: T, out: &mut [f64; 2]) {
    let planes = |n| (plane_of(x, l, n, c), plane_of(x, l, n, c));
    *out = channel_sums(l, planes, |v, _| v - r, |v, _| (v - r) * (v - r));
}

/// Channel `c` of [`normalize_batch`]: its moments around `r` over the
/// planes of `x` (laid out as `l`), then, while they are in cache,
/// `out = max(x · scale + shift (+ residual), floor)` plane by plane with
/// `(scale, shift) = map(moments)`. Callers run at most one task per
/// channel: no other task may touch channel `c`'s planes of `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_normalize<T: Wide>(
    x: &[T],
    residual: Option<&[T]>,
    out: Planes<MaybeUninit<T>>,
    l: Layout,
    c: usize,
    r: T,
    map: &mut dyn FnMut([f64; 2]) -> (T, T),
    floor: T,
) {
    let mut s = [0f64; 2];
    channel_moments(x, l, c, r, &mut s);
    let maps = [map(s)];
    let one = Layout {
        batch: 1,
        channels: 1,
        plane: l.plane,
    };
    for n in 0..l.batch {
        let res = residual.map(|r| plane_of(r, l, n, c));
        // SAFETY: this task alone touches channel `c` (the caller's
        // promise).
        let dst = unsafe { out.plane_mut(n, c) };
        affine_max(plane_of(x, l, n, c), res, one, 0, &maps, floor, dst);
    }
}

/// `[Σ g, Σ (x − mean) · g]` over one channel whose planes in image `n`
/// are `planes(n)` (`x`'s and `g`'s); with a mask `(scale, shift)`, `g`
/// counts only where `x · scale + shift > 0`.
#[inline(always)]
fn channel_dot<'a, T: Wide + 'a>(
    l: Layout,
    planes: impl Fn(usize) -> (&'a [T], &'a [T]),
    mean: T,
    mask: Option<(T, T)>,
) -> [f64; 2] {
    match mask {
        None => channel_sums(l, planes, |_, g| g, |v, g| (v - mean) * g),
        Some((s, t)) => {
            let pass = |v: T, g| {
                if v.fma(s, t) > T::zero() {
                    g
                } else {
                    T::zero()
                }
            };
            channel_sums(l, planes, pass, |v, g| (v - mean) * pass(v, g))
        }
    }
}

/// Channel `c` of [`backward`]: `sums = [Σ g, Σ (x − mean) · g]` (see
/// [`channel_dot`]) over the planes of `x` and `g` (both laid out as
/// `l`), then, when `out` is given, right away while the channel's planes
/// are in cache, its input gradient `out = k · g' + a · x + b` with
/// `[k, a, b] = coef(sums)` (see [`axpb`]); `out` may be `g` itself.
/// With `y`, `g` first becomes 0 wherever `y` is not positive, in place.
/// Callers run at most one task per channel: no other task may touch
/// channel `c`'s planes of `g` or `out` meanwhile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_backward<T: Wide>(
    x: &[T],
    y: Option<&[T]>,
    g: Planes<T>,
    out: Option<Planes<T>>,
    l: Layout,
    c: usize,
    mean: T,
    mask: Option<(T, T)>,
    coef: &dyn Fn([f64; 2]) -> [T; 3],
    sums: &mut [f64; 2],
) {
    // SAFETY (every plane access below): this task alone touches channel
    // `c` (the caller's promise), and each plane reference ends before a
    // writable one to the same plane is made.
    if let Some(y) = y {
        for n in 0..l.batch {
            let g = unsafe { g.plane_mut(n, c) };
            for (g, &y) in g.iter_mut().zip(plane_of(y, l, n, c)) {
                *g = if y > T::zero() { *g } else { T::zero() };
            }
        }
    }
    *sums = channel_dot(
        l,
        |n| (plane_of(x, l, n, c), unsafe { g.plane(n, c) }),
        mean,
        mask,
    );
    let Some(out) = out else { return };
    let coef = coef(*sums);
    let in_place = std::ptr::eq(out.data, g.data);
    for n in 0..l.batch {
        let from = (!in_place).then(|| unsafe { g.plane(n, c) });
        let u = unsafe { out.plane_mut(n, c) };
        axpb(u, from, plane_of(x, l, n, c), coef, mask);
    }
}

/// Over one plane: `u = k · g' + a · v + b` with `[k, a, b]`, where `g`
/// is `from` (as long as `u`) or, without it, `u` itself (in place), and
/// `g' = g`, or with a mask `(scale, shift)`, `g` where `v · scale + shift
/// > 0` and 0 elsewhere.
#[inline(always)]
fn axpb<T: Fma>(u: &mut [T], from: Option<&[T]>, v: &[T], [k, a, b]: [T; 3], mask: Option<(T, T)>) {
    match mask {
        None => plane_map(u, from, v, |g, v| g.fma(k, v.fma(a, b))),
        Some((s, t)) => plane_map(u, from, v, |g, v| {
            let g = if v.fma(s, t) > T::zero() {
                g
            } else {
                T::zero()
            };
            g.fma(k, v.fma(a, b))
        }),
    }
}

/// [`axpb`] over a run of whole planes starting at plane `first` of
/// layout `l`, each with its channel's coefficients and mask.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn axpb_planes<T: Fma>(
    u: &mut [T],
    from: Option<&[T]>,
    v: &[T],
    l: Layout,
    first: usize,
    coefs: &[[T; 3]],
    masks: Option<&[(T, T)]>,
) {
    let p = l.plane.max(1);
    for (i, (u, v)) in u.chunks_exact_mut(p).zip(v.chunks_exact(p)).enumerate() {
        let c = (first + i) % l.channels;
        let from = from.map(|g| &g[i * p..][..p]);
        axpb(u, from, v, coefs[c], masks.map(|m| m[c]));
    }
}

/// `u[i] = f(g[i], v[i])` over one plane, `g` being `u` itself where not
/// given.
#[inline(always)]
fn plane_map<T: Fma>(u: &mut [T], g: Option<&[T]>, v: &[T], f: impl Fn(T, T) -> T) {
    match g {
        None => {
            for (u, &v) in u.iter_mut().zip(v) {
                *u = f(*u, v);
            }
        }
        Some(g) => {
            for ((u, &g), &v) in u.iter_mut().zip(g).zip(v) {
                *u = f(g, v);
            }
        }
    }
}

/// Over a run of whole planes starting at plane `first`: `out = max(x ·
/// scale + shift (+ r), floor)` with each plane's channel's `(scale,
/// shift)`, adding the residual `r` (as long as `x`) when given. Writes
/// every value of `out` when `out` and `x` are runs of whole planes of one
/// length ([`normalize`] relies on it).
#[inline(always)]
fn affine_max<T: Fma>(
    x: &[T],
    r: Option<&[T]>,
    l: Layout,
    first: usize,
    maps: &[(T, T)],
    floor: T,
    out: &mut [MaybeUninit<T>],
) {
    let p = l.plane.max(1);
    // NaN stays NaN, as in PyTorch (`y > floor` would replace it).
    let clamp = |y: T| if y < floor { floor } else { y };
    for (i, (out, x)) in out.chunks_exact_mut(p).zip(x.chunks_exact(p)).enumerate() {
        let (scale, shift) = maps[(first + i) % l.channels];
        match r {
            None => {
                for (o, &v) in out.iter_mut().zip(x) {
                    o.write(clamp(v.fma(scale, shift)));
                }
            }
            Some(r) => {
                let r = &r[i * p..][..p];
                for ((o, &v), &r) in out.iter_mut().zip(x).zip(r) {
                    o.write(clamp(v.fma(scale, shift) + r));
                }
            }
        }
    }
}

crate::dispatch!(fn channel_moments_isa<T: Wide>(x: &[T], l: Layout, c: usize, r: T, out: &mut [f64; 2]) => channel_moments);
crate::dispatch!(fn channel_normalize_isa<T: Wide>(x: &[T], residual: Option<&[T]>, out: Planes<MaybeUninit<T>>, l: Layout, c: usize, r: T, map: &mut dyn FnMut([f64; 2]) -> (T, T), floor: T) => channel_normalize);
crate::dispatch!(fn channel_backward_isa<T: Wide>(x: &[T], y: Option<&[T]>, g: Planes<T>, out: Option<Planes<T>>, l: Layout, c: usize, mean: T, mask: Option<(T, T)>, coef: &dyn Fn([f64; 2]) -> [T; 3], sums: &mut [f64; 2]) => channel_backward);
crate::dispatch!(fn axpb_planes_isa<T: Fma>(u: &mut [T], from: Option<&[T]>, v: &[T], l: Layout, first: usize, coefs: &[[T; 3]], masks: Option<&[(T, T)]>) => axpb_planes);
crate::dispatch!(fn affine_max_isa<T: Fma>(x: &[T], r: Option<&[T]>, l: Layout, first: usize, maps: &[(T, T)], floor: T, out: &mut [MaybeUninit<T>]) => affine_max);

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of `batch` images of `channels` planes of `plane` values,
    /// and its number of values.
    fn layout(batch: usize, channels: usize, plane: usize) -> (Layout, usize) {
        let l = Layout {
            batch,
            channels,
            plane,
        };
        (l, batch * channels * plane)
    }

    /// Deterministic values around `offset` (spread about ±1).
    fn values(n: usize, offset: f32, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| offset + (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0))
            .collect()
    }

    /// Statistics, gradient sums and the input gradient against float64
    /// sums, for planes with and without a tail past the 16 lanes, below
    /// and above [`SMALL_PLANE`], channels of more values than one float32
    /// run ([`FLUSH`]), and a large offset.
    #[test]
    fn statistics_and_gradients_match_float64_sums() {
        for (batch, channels, plane) in [(40, 3, 49), (3, 5, 16), (2, 2, 1000), (7, 4, 5)] {
            let (l, n) = layout(batch, channels, plane);
            let x = values(n, 1000.0, 1);
            let dy = values(n, 0.5, 2);
            let at = |b: usize, c: usize, i: usize| (b * channels + c) * plane + i;
            let (mean, var) = batch_stats(&l, &x);
            let m = l.per_channel() as f64;
            let invstd = inv_std(&var, 1e-5);
            let Gradients {
                dgamma, dbeta, dx, ..
            } = backward(
                &l,
                &x,
                dy.clone(),
                &mean,
                &invstd,
                None,
                true,
                false,
                true,
                None,
                None,
            );
            let dx = dx.expect("dx");
            for c in 0..channels {
                let each = || (0..batch).flat_map(move |b| (0..plane).map(move |i| at(b, c, i)));
                let mu = each().map(|k| x[k] as f64).sum::<f64>() / m;
                let v = each().map(|k| (x[k] as f64 - mu).powi(2)).sum::<f64>() / m;
                assert!(
                    (mean[c] as f64 - mu).abs() < 1e-3,
                    "{l:?} mean {} vs {mu}",
                    mean[c]
                );
                assert!(
                    (var[c] as f64 - v).abs() < 1e-4 * v,
                    "{l:?} var {} vs {v}",
                    var[c]
                );
                let sdy = each().map(|k| dy[k] as f64).sum::<f64>();
                let sdx = each()
                    .map(|k| dy[k] as f64 * (x[k] as f64 - mean[c] as f64) * invstd[c] as f64)
                    .sum::<f64>();
                assert!((dbeta[c] as f64 - sdy).abs() < 1e-5 * m, "{l:?} dβ");
                assert!((dgamma[c] as f64 - sdx).abs() < 1e-5 * m, "{l:?} dγ");
                let k = invstd[c] as f64;
                for i in each() {
                    let xhat = (x[i] as f64 - mean[c] as f64) * k;
                    let want = k * (dy[i] as f64 - sdy / m - xhat * sdx / m);
                    assert!(
                        (dx[i] as f64 - want).abs() < 1e-4,
                        "{l:?} dx {} vs {want}",
                        dx[i]
                    );
                }
            }
        }
    }

    /// `dx` in a buffer of its own (NaN before) equals `dx` in `dy`'s, with
    /// and without the ReLU's mask, and `dy` comes back unchanged; with an
    /// output mask (applied in its own pass on small planes, in each
    /// channel's on larger ones), `dy` comes back masked and the gradients
    /// equal those of the masked `dy`.
    #[test]
    fn input_gradient_in_another_buffer_equals_the_one_in_place() {
        for plane in [50, 2 * MASK_IN_CHANNEL + 3] {
            input_gradients_agree(plane);
        }
    }

    fn input_gradients_agree(plane: usize) {
        let (l, n) = layout(3, 4, plane);
        let (x, dy) = (values(n, 0.0, 3), values(n, 0.2, 4));
        let y = values(n, 0.0, 7);
        let masked: Vec<f32> = dy
            .iter()
            .zip(&y)
            .map(|(&d, &y)| if y > 0.0 { d } else { 0.0 })
            .collect();
        assert!(masked.iter().zip(&dy).any(|(m, d)| m != d));
        let (mean, var) = batch_stats(&l, &x);
        let invstd = inv_std(&var, 1e-5);
        let (gamma, beta) = (values(4, 1.0, 5), values(4, 0.0, 6));
        for (relu, mask) in [(false, None), (true, None), (false, Some(&y[..]))] {
            let run = |dy: &[f32], into: Option<Vec<f32>>, mask| {
                let aff = Some((gamma.as_slice(), beta.as_slice()));
                backward(
                    &l,
                    &x,
                    dy.to_vec(),
                    &mean,
                    &invstd,
                    aff,
                    true,
                    relu,
                    true,
                    into,
                    mask,
                )
            };
            let in_place = run(&dy, None, mask);
            let apart = run(&dy, Some(vec![f32::NAN; n]), mask);
            assert!(in_place.dy.is_none());
            let want_dy = if mask.is_some() { &masked } else { &dy };
            assert_eq!(apart.dy.as_ref(), Some(want_dy));
            assert_eq!(apart.dx, in_place.dx);
            assert_eq!(apart.dgamma, in_place.dgamma);
            if mask.is_some() {
                let premasked = run(&masked, None, None);
                assert_eq!(premasked.dx, in_place.dx);
                assert_eq!(premasked.dgamma, in_place.dgamma);
                assert_eq!(premasked.dbeta, in_place.dbeta);
            }
        }
    }

    /// The one-pass training normalisation gives exactly the statistics
    /// and values of `batch_stats` followed by `normalize`, with and
    /// without affine parameters, ReLU and residual, on planes with and
    /// without a tail past the 16 lanes, below and above [`SMALL_PLANE`].
    #[test]
    fn normalize_batch_equals_statistics_then_normalize() {
        let cases = [
            (4, 3, 49),
            (3, 5, 16),
            (2, 2, 300),
            (3, 3, 2 * SMALL_PLANE),
            (5, 4, 1),
        ];
        for (batch, channels, plane) in cases {
            let (l, n) = layout(batch, channels, plane);
            let x = values(n, 3.0, 1);
            let residual = values(n, 0.0, 2);
            let (g, b) = (values(channels, 1.0, 3), values(channels, 0.0, 4));
            for (affine, relu, residual) in [
                (None, false, None),
                (Some((&g[..], &b[..])), true, None),
                (Some((&g[..], &b[..])), true, Some(&residual[..])),
            ] {
                let (y, mean, var) = normalize_batch(&l, &x, 1e-5, affine, relu, residual);
                let (want_mean, want_var) = batch_stats(&l, &x);
                let invstd = inv_std(&want_var, 1e-5);
                let want = normalize(&l, &x, &want_mean, &invstd, affine, relu, residual);
                assert_eq!((mean, var), (want_mean, want_var));
                assert_eq!(y, want, "{l:?}, relu {relu}");
            }
        }
    }
}

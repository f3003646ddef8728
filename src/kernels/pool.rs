//! 2-D max and average pooling over NCHW planes (PyTorch `max_pool2d`,
//! `avg_pool2d` with `ceil_mode = False`, `count_include_pad = True`).
//! One parallel task per (image, channel) plane.

use super::phase::{chunk_starts, merge_even_odd, take_even};
use crate::error::{Error, Result};
use crate::simd::{Fma, Isa, LANES, Lanes, from_lanes, to_lanes};
use rayon::prelude::*;

/// The geometry of a pooling layer: windows of `kernel` every `stride`
/// over the input padded by `padding` on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Images × channels: the number of independent planes.
    pub planes: usize,
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl PoolShape {
    /// Checks the geometry as PyTorch does: positive kernel and stride,
    /// padding at most half the kernel, and an output of at least 1×1.
    pub fn validate(self) -> Result<Self> {
        for d in 0..2 {
            if self.kernel[d] == 0 || self.stride[d] == 0 {
                return Err(Error::invalid(format!(
                    "pool2d: kernel {:?} and stride {:?} must be positive",
                    self.kernel, self.stride
                )));
            }
            if 2 * self.padding[d] > self.kernel[d] {
                return Err(Error::invalid(format!(
                    "pool2d: padding {:?} must be at most half the kernel {:?}",
                    self.padding, self.kernel
                )));
            }
            if self.input[d] + 2 * self.padding[d] < self.kernel[d] {
                return Err(Error::invalid(format!(
                    "pool2d: input {:?} with padding {:?} is smaller than the kernel {:?}",
                    self.input, self.padding, self.kernel
                )));
            }
        }
        Ok(self)
    }

    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|d| (self.input[d] + 2 * self.padding[d] - self.kernel[d]) / self.stride[d] + 1)
    }

    fn in_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn out_plane(&self) -> usize {
        let [oh, ow] = self.output();
        oh * ow
    }

    /// Planes handed to one parallel task: small planes are grouped so
    /// that a task has a few thousand outputs.
    fn planes_per_task(&self) -> usize {
        (4096 / self.out_plane().max(1)).max(1)
    }

    fn check(&self, x: usize, y: usize) -> Result<()> {
        let (xl, yl) = (
            self.planes * self.in_plane(),
            self.planes * self.out_plane(),
        );
        if x != xl || y != yl {
            return Err(Error::invalid(format!(
                "pool2d: input has {x} and output {y} elements, {self:?} needs {xl} and {yl}"
            )));
        }
        Ok(())
    }

    /// For output position `o` along dimension `d`: the input range its
    /// window covers, and the window's size clipped to the padded input
    /// (PyTorch's divisor with `count_include_pad`).
    fn window(&self, d: usize, o: usize) -> (std::ops::Range<usize>, usize) {
        let start = o * self.stride[d];
        let end = (start + self.kernel[d]).min(self.input[d] + 2 * self.padding[d]);
        let lo = start.saturating_sub(self.padding[d]);
        let hi = end.saturating_sub(self.padding[d]).min(self.input[d]);
        (lo..hi.max(lo), end - start)
    }

    /// Calls `f(out_index, input_indices, divisor)` for every output of
    /// one plane; `input_indices` lists the window's in-plane indices.
    #[cfg(test)]
    fn each_window(&self, mut f: impl FnMut(usize, &[usize], usize)) {
        let [oh, ow] = self.output();
        let mut idx = Vec::with_capacity(self.kernel[0] * self.kernel[1]);
        for oy in 0..oh {
            let (rows, dh) = self.window(0, oy);
            for ox in 0..ow {
                let (cols, dw) = self.window(1, ox);
                idx.clear();
                for r in rows.clone() {
                    idx.extend(cols.clone().map(|c| r * self.input[1] + c));
                }
                f(oy * ow + ox, &idx, dh * dw);
            }
        }
    }
}

/// Max pooling: `y` gets each window's maximum (NaN wins, as in PyTorch)
/// and `argmax` (when given) its in-plane index, the first among equals.
pub fn max_forward(
    s: &PoolShape,
    x: &[f32],
    y: &mut [f32],
    argmax: Option<&mut [u32]>,
) -> Result<()> {
    s.check(x.len(), y.len())?;
    let (ip, op) = (s.in_plane(), s.out_plane());
    let argmax = match argmax {
        Some(a) if a.len() == y.len() => a,
        Some(a) => {
            return Err(Error::invalid(format!(
                "max_pool2d: argmax has {} elements, the output {}",
                a.len(),
                y.len()
            )));
        }
        None => {
            max_values(s, x, y);
            return Ok(());
        }
    };
    let [_, ow] = s.output();
    let (width, stride, pad) = (s.input[1], s.stride[1], s.padding[1]);
    // Per kernel column, the outputs whose column lies inside the input:
    // `ox · stride + t − pad ∈ [0, width)`.
    let reach: Vec<std::ops::Range<usize>> = (0..s.kernel[1])
        .map(|t| {
            let lo = pad.saturating_sub(t).div_ceil(stride);
            let hi = (width + pad).saturating_sub(t).div_ceil(stride).min(ow);
            lo..hi.max(lo)
        })
        .collect();
    let first_cols: Vec<usize> = (0..ow).map(|o| s.window(1, o).0.start).collect();
    let cols = ArgColumns {
        reach: &reach,
        first: &first_cols,
    };
    y.par_chunks_mut(op)
        .zip(argmax.par_chunks_mut(op))
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each_init(
            || vec![0f32; ow],
            |picked, (p, (out, arg))| {
                let plane = &x[p * ip..][..ip];
                max_arg_plane_isa::<f32>(Isa::best(), s, &cols, plane, out, arg, picked);
            },
        );
    Ok(())
}

/// The column geometry of [`max_arg_plane`], the same for every plane:
/// per kernel column the outputs it reaches inside the input, and per
/// output column its window's first input column.
pub(crate) struct ArgColumns<'a> {
    reach: &'a [std::ops::Range<usize>],
    first: &'a [usize],
}

/// One plane of [`max_forward`] with argmax, a row of outputs at a time:
/// each window starts from its first tap inside the input, then every tap
/// in row-major window order, over all the outputs it reaches at once
/// (stride-2 columns gathered by [`take_even`] into `picked`, `[OW]`),
/// replaces the maximum where it is strictly greater, or a NaN where the
/// maximum is none: the first maximum (or NaN) in window order, as a scan
/// of each window finds it.
#[inline(always)]
fn max_arg_plane<T: Fma>(
    s: &PoolShape,
    cols: &ArgColumns,
    plane: &[T],
    out: &mut [T],
    arg: &mut [u32],
    picked: &mut [T],
) {
    let [_, ow] = s.output();
    let width = s.input[1];
    let (stride, pad) = (s.stride[1], s.padding[1]);
    for (oy, (out_row, arg_row)) in out
        .chunks_exact_mut(ow)
        .zip(arg.chunks_exact_mut(ow))
        .enumerate()
    {
        let (rows, _) = s.window(0, oy);
        for ((o, a), &c) in out_row.iter_mut().zip(arg_row.iter_mut()).zip(cols.first) {
            let at = rows.start * width + c;
            *o = plane[at];
            *a = at as u32;
        }
        for r in rows {
            for (t, reach) in cols.reach.iter().enumerate() {
                let n = reach.len();
                if n == 0 {
                    continue;
                }
                let first = r * width + reach.start * stride + t - pad;
                let values: &[T] = match stride {
                    1 => &plane[first..][..n],
                    2 => {
                        take_even(&mut picked[..n], &plane[first..][..2 * n - 1]);
                        &picked[..n]
                    }
                    _ => {
                        for (i, v) in picked[..n].iter_mut().enumerate() {
                            *v = plane[first + i * stride];
                        }
                        &picked[..n]
                    }
                };
                let outs = out_row[reach.clone()].iter_mut();
                let args = arg_row[reach.clone()].iter_mut();
                for (i, ((o, a), &v)) in outs.zip(args).zip(values).enumerate() {
                    #[allow(clippy::eq_op)] // `x != x`: x is a NaN
                    let take = (v > *o) | ((v != v) & (*o == *o));
                    *o = if take { v } else { *o };
                    *a = if take {
                        (first + i * stride) as u32
                    } else {
                        *a
                    };
                }
            }
        }
    }
}

crate::dispatch!(fn max_arg_plane_isa<T: Fma>(s: &PoolShape, cols: &ArgColumns, plane: &[T], out: &mut [T], arg: &mut [u32], picked: &mut [T]) => max_arg_plane);

/// Max pooling's values alone (inference), [`halving`] where [`halves`]
/// (the stems' 3×3/2 pools), else [`separable`]. NaN wins as in
/// [`max_forward`].
fn max_values(s: &PoolShape, x: &[f32], y: &mut [f32]) {
    if halves(s) {
        halving::<MaxOf>(s, x, y);
    } else {
        separable::<MaxOf>(s, x, y);
    }
}

/// Average pooling for inference (`count_include_pad`, as
/// [`avg_forward`]): [`halving_plane`] where [`halves`], else
/// [`separable`]; one pass, no per-task transposes, the sums in a
/// different order than [`avg_forward`]'s.
pub fn avg_values(s: &PoolShape, x: &[f32], y: &mut [f32]) -> Result<()> {
    s.check(x.len(), y.len())?;
    if halves(s) {
        halving::<MeanOf>(s, x, y);
    } else {
        separable::<MeanOf>(s, x, y);
    }
    Ok(())
}

/// A [`halves`] pooling, [`halving_plane`] per plane, in parallel.
fn halving<R: Reduce>(s: &PoolShape, x: &[f32], y: &mut [f32]) {
    let (ip, op, width) = (s.in_plane(), s.out_plane(), s.input[1]);
    each_plane(s, y, op, |p, out, scratch| {
        let plane = &x[p * ip..][..ip];
        halving_plane_isa::<R>(Isa::best(), plane, width, out, scratch)
    });
}

/// Whether [`avg_values`] and [`max_values`] take [`halving_plane`]: 3×3
/// windows at stride 2 with padding 1 over planes of even height and
/// width (ShuffleNet's downsampling pool, the stems' max pools), where
/// every window counts 9 values with the padding and reaches past the
/// plane only at the top and the left.
fn halves(s: &PoolShape) -> bool {
    s.kernel == [3, 3]
        && s.stride == [2, 2]
        && s.padding == [1, 1]
        && s.input.iter().all(|d| d.is_multiple_of(2))
}

/// One plane of a [`halves`] pooling, `x` `[H, W]` (`W = width`) into `y`
/// `[H / 2, W / 2]`, in whole-plane passes (rows of 14 or 28 values fill
/// vectors poorly): the window rows combined down each output row
/// (`down`, `[H / 2, W]`), their even and odd columns split at once, then
/// output `ox` of a row is `(odd[ox − 1] ∘ even[ox]) ∘ odd[ox]` (the first
/// of each row `even[0] ∘ odd[0]`: its left column is padding), finished
/// over 9 values. `scratch` holds at least `H · W` values. 2 threads, batch
/// 1, against [`separable`]: ShuffleNet g8's 384 planes of 28 × 28 0.069 →
/// 0.029 ms (average).
#[inline(always)]
fn halving_plane<R: Reduce>(x: &[f32], width: usize, y: &mut [f32], scratch: &mut [f32]) {
    let (ow, half) = (width / 2, y.len() * 2);
    let (down, rest) = scratch.split_at_mut(half);
    let (even, rest) = rest.split_at_mut(y.len());
    let odd = &mut rest[..y.len()];
    let row = |r: usize| &x[r * width..][..width];
    for (oy, rows) in down.chunks_exact_mut(width).enumerate() {
        // The top window's first row is padding.
        let top = if oy == 0 { None } else { Some(row(2 * oy - 1)) };
        match width {
            16.. => combine_rows::<R, 16>(rows, top, row(2 * oy), row(2 * oy + 1)),
            8.. => combine_rows::<R, 8>(rows, top, row(2 * oy), row(2 * oy + 1)),
            _ => combine_rows::<R, 1>(rows, top, row(2 * oy), row(2 * oy + 1)),
        }
    }
    take_even(even, down);
    take_even(odd, &down[1..]);
    across(even, odd, ow, y, R::combine, |v| R::finish(v, 9));
}

/// `out[i] = f(f(odd[i − 1], even[i]), odd[i])` for rows of `ow` outputs
/// (`out`, `even` and `odd` laid out alike): the three window columns
/// `2 · ox − 1`, `2 · ox`, `2 · ox + 1` of each output, from a row's even
/// and odd columns; the first output of each row `f(even, odd)` (its left
/// column is padding), each passed through `finish`. Both one-plane
/// kernels, [`halving_plane`] and [`avg_plane`], end their rows with it.
#[inline(always)]
fn across<T: Copy>(
    even: &[T],
    odd: &[T],
    ow: usize,
    out: &mut [T],
    f: impl Fn(T, T) -> T,
    finish: impl Fn(T) -> T,
) {
    out[0] = finish(f(even[0], odd[0]));
    let windows = odd.iter().zip(&even[1..]).zip(&odd[1..]);
    for (o, ((&l, &m), &r)) in out[1..].iter_mut().zip(windows) {
        *o = finish(f(f(l, m), r));
    }
    for i in (ow..out.len()).step_by(ow) {
        out[i] = finish(f(even[i], odd[i]));
    }
}

/// `d = (a ∘ b) ∘ c` (`b ∘ c` without `a`) element-wise over rows of at
/// least `C` values, in fixed chunks of `C` (the last one moved back to end
/// with the row), so that rows of 14 or 28 values go in whole vectors.
#[inline(always)]
fn combine_rows<R: Reduce, const C: usize>(d: &mut [f32], a: Option<&[f32]>, b: &[f32], c: &[f32]) {
    for at in chunk_starts(d.len(), C) {
        let d: &mut [f32; C] = (&mut d[at..][..C]).try_into().expect("chunk");
        let (b, c) = (&b[at..][..C], &c[at..][..C]);
        match a {
            Some(a) => {
                let a = &a[at..][..C];
                for i in 0..C {
                    d[i] = R::combine(R::combine(a[i], b[i]), c[i]);
                }
            }
            None => {
                for i in 0..C {
                    d[i] = R::combine(b[i], c[i]);
                }
            }
        }
    }
}

crate::dispatch!(fn halving_plane_isa<R: Reduce>(x: &[f32], width: usize, y: &mut [f32], scratch: &mut [f32]) => halving_plane);

/// What a separable pooling computes over a window: values folded with
/// `combine` from `INIT`, then `finish(value, window size including
/// padding)`.
pub(crate) trait Reduce {
    const INIT: f32;
    fn combine(a: f32, b: f32) -> f32;
    fn finish(v: f32, size: usize) -> f32;
}

/// The maximum (a NaN wins).
pub(crate) struct MaxOf;

impl Reduce for MaxOf {
    const INIT: f32 = f32::NEG_INFINITY;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        nan_max(a, b)
    }
    #[inline(always)]
    fn finish(v: f32, _: usize) -> f32 {
        v
    }
}

/// The mean over the window's size including padding.
pub(crate) struct MeanOf;

impl Reduce for MeanOf {
    const INIT: f32 = 0.0;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn finish(v: f32, size: usize) -> f32 {
        v / size as f32
    }
}

/// A separable pooling's windows: per output row the input rows it
/// covers and its height including padding, the same per output column,
/// and the `interior` output columns (windows wholly inside the input),
/// computed a kernel column at a time; the others are edge windows,
/// computed one by one. `flat`: the plane's rows go through the
/// interior pass all at once ([`flat_plane`]).
pub(crate) struct Separable {
    shape: PoolShape,
    rows: Vec<(std::ops::Range<usize>, usize)>,
    cols: Vec<(std::ops::Range<usize>, usize)>,
    interior: std::ops::Range<usize>,
    flat: bool,
}

/// A pooling computed separably, one parallel task per run of planes:
/// per output row, [`Reduce::combine`] down its window's rows (whole input
/// rows), then across each window's columns (all interior windows at once,
/// one pass per kernel column; the edge windows one by one).
fn separable<R: Reduce>(s: &PoolShape, x: &[f32], y: &mut [f32]) {
    let (ip, op) = (s.in_plane(), s.out_plane());
    let [oh, ow] = s.output();
    let cols: Vec<_> = (0..ow).map(|o| s.window(1, o)).collect();
    let inside = |o: usize| cols[o].0.len() == s.kernel[1];
    let start = (0..ow).find(|&o| inside(o)).unwrap_or(ow);
    let mut end = (start..ow).find(|&o| !inside(o)).unwrap_or(ow);
    // Stride 2 over rows of even width with half as many outputs (3×3/2
    // pooling with padding 1, ShuffleNet's) splits the whole plane's
    // columns into even and odd ones at once: rows of 28 or 14 values
    // then fill vectors as well as long ones.
    let flat =
        s.stride[1] == 2 && s.input[1].is_multiple_of(2) && ow == s.input[1] / 2 && start < end;
    // Otherwise the interior goes a tap at a time over vectors of outputs
    // of each row: only for strides 1 and 2 (contiguous values, or
    // `take_even`'s permutes) and rows of at least a vector; else every
    // window is an edge.
    if !flat && (s.stride[1] > 2 || end - start < LANES) {
        end = start;
    }
    let geometry = Separable {
        shape: *s,
        rows: (0..oh).map(|o| s.window(0, o)).collect(),
        cols,
        interior: start..end,
        flat,
    };
    let scratch = if flat { oh * s.input[1] } else { s.input[1] };
    y.par_chunks_mut(op)
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each_init(
            || (vec![0f32; scratch], vec![0f32; scratch.max(ow)]),
            |(down, picked), (p, out)| {
                let plane = &x[p * ip..][..ip];
                separable_plane_isa::<R>(Isa::best(), &geometry, plane, out, down, picked)
            },
        );
}

/// One plane of [`separable`]: `plane` `[H, W]` into `out` `[OH, OW]`;
/// `down` and `picked` are scratch (`[OH · W]` each when `flat`, else
/// `[W]` and `[OW]`).
#[inline(always)]
fn separable_plane<R: Reduce>(
    g: &Separable,
    plane: &[f32],
    out: &mut [f32],
    down: &mut [f32],
    picked: &mut [f32],
) {
    if g.flat {
        return flat_plane::<R>(g, plane, out, down, picked);
    }
    let (s, width, ow) = (&g.shape, g.shape.input[1], g.cols.len());
    let (stride, interior) = (s.stride[1], g.interior.clone());
    for (out_row, (r, height)) in out.chunks_exact_mut(ow).zip(&g.rows) {
        down_rows::<R>(plane, width, r.clone(), down);
        let inner = &mut out_row[interior.clone()];
        inner.fill(R::INIT);
        let taps = if inner.is_empty() { 0 } else { s.kernel[1] };
        for t in 0..taps {
            let first = interior.start * stride + t - s.padding[1];
            let row = &down[first..][..(inner.len() - 1) * stride + 1];
            let row = if stride == 1 {
                row
            } else {
                let even = &mut picked[..inner.len()];
                take_even(even, row);
                even
            };
            for (o, &v) in inner.iter_mut().zip(row) {
                *o = R::combine(*o, v);
            }
        }
        let size = height * s.kernel[1];
        inner.iter_mut().for_each(|o| *o = R::finish(*o, size));
        edges::<R>(g, down, out_row, *height);
    }
}

/// [`separable_plane`] for a `flat` geometry: the window columns of every
/// output row first (`down`, `[OH, W]`), its even and odd columns over the
/// whole plane (`picked`, both halves), then per kernel column the even or
/// odd values at a fixed shift added to all outputs at once. Outputs whose
/// window reaches into the padding read values of the neighbouring row
/// there, and are recomputed as edges.
#[inline(always)]
fn flat_plane<R: Reduce>(
    g: &Separable,
    plane: &[f32],
    out: &mut [f32],
    down: &mut [f32],
    picked: &mut [f32],
) {
    let (s, width, ow) = (&g.shape, g.shape.input[1], g.cols.len());
    for (d, (r, _)) in down.chunks_exact_mut(width).zip(&g.rows) {
        down_rows::<R>(plane, width, r.clone(), d);
    }
    let n = out.len();
    let (even, odd) = picked.split_at_mut(n);
    take_even(even, down);
    take_even(odd, &down[1..]);
    out.fill(R::INIT);
    for t in 0..s.kernel[1] {
        // Output `i` reads column `2 · ox + t − padding` of its row: the
        // even or odd value at `i + shift`.
        let d = t as isize - s.padding[1] as isize;
        let src: &[f32] = if d % 2 == 0 { even } else { odd };
        let shift = d.div_euclid(2);
        let (skip_out, skip_src) = (shift.min(0).unsigned_abs(), shift.max(0).unsigned_abs());
        for (o, &v) in out[skip_out..].iter_mut().zip(&src[skip_src..]) {
            *o = R::combine(*o, v);
        }
    }
    for ((out_row, (_, height)), d) in out
        .chunks_exact_mut(ow)
        .zip(&g.rows)
        .zip(down.chunks_exact(width))
    {
        let size = height * s.kernel[1];
        out_row[g.interior.clone()]
            .iter_mut()
            .for_each(|o| *o = R::finish(*o, size));
        edges::<R>(g, d, out_row, *height);
    }
}

/// `down[c] = combine` of column `c` over input rows `rows` of `plane`: a
/// chunk of columns at a time down all the rows (a copy of the first row
/// then a pass per row, each adding to the one before in memory, waited
/// on its own stores, which a short row reaches again at once): chunks of
/// [`LANES`], or of 8 for shorter rows. Rows of 32 or more go a row at a
/// time (ShuffleNet g1 average pooling on 56 × 56: 0.016 ms, 0.018 in
/// chunks; ResNeXt-50 max pooling on 112 × 112: 0.17 ms, 0.24).
#[inline(always)]
fn down_rows<R: Reduce>(
    plane: &[f32],
    width: usize,
    rows: std::ops::Range<usize>,
    down: &mut [f32],
) {
    let rows = &plane[rows.start * width..rows.end * width];
    match width {
        LANES..32 => down_chunks::<R, LANES>(rows, width, down),
        8..LANES => down_chunks::<R, 8>(rows, width, down),
        _ => {
            down.copy_from_slice(&rows[..width]);
            for row in rows.chunks_exact(width).skip(1) {
                for (d, &v) in down.iter_mut().zip(row) {
                    *d = R::combine(*d, v);
                }
            }
        }
    }
}

/// [`down_rows`] in chunks of `C ≤ width` columns, the last chunk moved
/// back to end the row.
#[inline(always)]
fn down_chunks<R: Reduce, const C: usize>(rows: &[f32], width: usize, down: &mut [f32]) {
    let mut at = 0;
    while at < width {
        let c = at.min(width - C);
        let mut acc: [f32; C] = rows[c..][..C].try_into().expect("C values");
        for row in rows.chunks_exact(width).skip(1) {
            let row: &[f32; C] = row[c..][..C].try_into().expect("C values");
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = R::combine(*a, v);
            }
        }
        down[c..][..C].copy_from_slice(&acc);
        at = c + C;
    }
}

/// The edge windows of one output row (those outside `g.interior`), one
/// by one from the row's window columns `down`.
#[inline(always)]
fn edges<R: Reduce>(g: &Separable, down: &[f32], out_row: &mut [f32], height: usize) {
    let ow = g.cols.len();
    for edge in [0..g.interior.start, g.interior.end..ow] {
        for (o, (c, w)) in out_row[edge.clone()].iter_mut().zip(&g.cols[edge]) {
            let v = down[c.clone()]
                .iter()
                .fold(R::INIT, |m, &v| R::combine(m, v));
            *o = R::finish(v, height * w);
        }
    }
}

crate::dispatch!(fn separable_plane_isa<R: Reduce>(g: &Separable, plane: &[f32], out: &mut [f32], down: &mut [f32], picked: &mut [f32]) => separable_plane);

/// The larger of `a` and `b`, or the NaN if either is one (`a` first);
/// branch-free, so that loops of it vectorise.
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if (b > a) | b.is_nan() { b } else { a }
}

/// Max pooling's input gradient: each output gradient goes to its argmax.
pub fn max_backward(s: &PoolShape, dy: &[f32], argmax: &[u32], dx: &mut [f32]) -> Result<()> {
    s.check(dx.len(), dy.len())?;
    let (ip, op) = (s.in_plane(), s.out_plane());
    dx.par_chunks_mut(ip)
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each(|(p, plane)| {
            plane.fill(0.0);
            for (&g, &a) in dy[p * op..][..op].iter().zip(&argmax[p * op..][..op]) {
                plane[a as usize] += g;
            }
        });
    Ok(())
}

/// Element types of the average-pooling kernels.
pub(crate) trait Lane: Fma + std::ops::Div<Output = Self> {}
impl<T: Fma + std::ops::Div<Output = T>> Lane for T {}

/// Average pooling's separable geometry: per output row the input rows of
/// its window, per output column its input columns (both clipped to the
/// input).
pub(crate) struct Windows {
    rows: Vec<std::ops::Range<usize>>,
    cols: Vec<std::ops::Range<usize>>,
    width: usize,
}

impl Windows {
    /// The windows of `s`, and per output (`[OH · OW]`) its divisor: the
    /// window's size including padding.
    fn new(s: &PoolShape) -> (Windows, Vec<f32>) {
        let [oh, ow] = s.output();
        let (rows, heights): (Vec<_>, Vec<_>) = (0..oh).map(|o| s.window(0, o)).unzip();
        let (cols, widths): (Vec<_>, Vec<_>) = (0..ow).map(|o| s.window(1, o)).unzip();
        let divisors = heights
            .iter()
            .flat_map(|&dh| widths.iter().map(move |&dw| (dh * dw) as f32))
            .collect();
        let windows = Windows {
            rows,
            cols,
            width: s.input[1],
        };
        (windows, divisors)
    }

    /// Zeroed scratch: `[H · OW]` row sums and one buffer per plane size.
    fn scratch<T: Fma>(&self, s: &PoolShape) -> [Vec<Lanes<T>>; 3] {
        let zero = [T::zero(); LANES];
        [s.input[0] * self.cols.len(), s.in_plane(), s.out_plane()].map(|n| vec![zero; n])
    }
}

/// Planes per parallel task of the average-pooling kernels: a multiple of
/// [`LANES`].
fn lane_planes(s: &PoolShape) -> usize {
    s.planes_per_task().div_ceil(LANES) * LANES
}

/// Average pooling: each window's sum over the input, divided by the
/// window's size including padding. Separable: window sums along each row
/// (from the window's first value, left to right), then sums of those down
/// each column (from zero, top to bottom); [`LANES`] planes side by side,
/// or one plane at a time where [`by_planes`]: the same sums either way.
pub fn avg_forward(s: &PoolShape, x: &[f32], y: &mut [f32]) -> Result<()> {
    s.check(x.len(), y.len())?;
    let (win, divisors) = Windows::new(s);
    if !by_planes(s) {
        avg_forward_by_lanes(s, &win, &divisors, x, y);
        return Ok(());
    }
    let (ip, op) = (s.in_plane(), s.out_plane());
    each_plane(s, y, op, |p, out, scratch| {
        let plane = &x[p * ip..][..ip];
        avg_plane_isa(Isa::best(), &win, &divisors, plane, out, scratch)
    });
    Ok(())
}

/// Whether [`avg_forward`] and [`avg_backward`] take one plane at a time
/// ([`avg_plane`], [`avg_plane_backward`]): 3-wide windows at column
/// stride 2 with padding 1 (ShuffleNet's 3×3/2 pooling) on rows of at
/// least 28 values, even. Rows that long fill vectors, and the lanes
/// kernels' transposes cost more (g3's batch of 32, forward and backward:
/// 56 × 56 2.2 → 0.6 and 1.4 → 0.5 ms, 28 × 28 4.3 → 2.9 and 3.1 → 2.1
/// ms; on 14 × 14 the lanes took 1.1 ms forward, one plane at a time 2.2).
fn by_planes(s: &PoolShape) -> bool {
    let w = s.input[1];
    s.kernel[1] == 3 && s.stride[1] == 2 && s.padding[1] == 1 && w.is_multiple_of(2) && w >= 28
}

/// `f(p, plane p of dst, scratch)` for every plane of `dst` (`len` values
/// each), in parallel; the scratch holds `3 · H · W / 2` values (the
/// [`by_planes`] kernels').
fn each_plane(
    s: &PoolShape,
    dst: &mut [f32],
    len: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) {
    dst.par_chunks_mut(len)
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each_init(
            || vec![0f32; 3 * s.in_plane() / 2],
            |scratch, (p, plane)| f(p, plane, scratch),
        );
}

/// [`avg_forward`], [`LANES`] planes side by side.
fn avg_forward_by_lanes(s: &PoolShape, win: &Windows, divisors: &[f32], x: &[f32], y: &mut [f32]) {
    let (ip, op, per_task) = (s.in_plane(), s.out_plane(), lane_planes(s));
    y.par_chunks_mut(op * per_task).enumerate().for_each_init(
        || win.scratch(s),
        |[across, xt, yt], (t, out)| {
            for (b, out) in out.chunks_mut(op * LANES).enumerate() {
                let first = t * per_task + b * LANES;
                let x = &x[first * ip..][..out.len() / op * ip];
                avg_forward_isa(Isa::best(), win, divisors, x, out, xt, across, yt);
            }
        },
    );
}

/// Average pooling's input gradient: the forward pass transposed, columns
/// first (each output's share spread over its window's rows), then rows.
pub fn avg_backward(s: &PoolShape, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    s.check(dx.len(), dy.len())?;
    let (win, divisors) = Windows::new(s);
    if !by_planes(s) {
        avg_backward_by_lanes(s, &win, &divisors, dy, dx);
        return Ok(());
    }
    let (ip, op) = (s.in_plane(), s.out_plane());
    each_plane(s, dx, ip, |p, plane, scratch| {
        let dy = &dy[p * op..][..op];
        avg_plane_backward_isa(Isa::best(), &win, &divisors, dy, plane, scratch)
    });
    Ok(())
}

/// [`avg_backward`], [`LANES`] planes side by side.
fn avg_backward_by_lanes(
    s: &PoolShape,
    win: &Windows,
    divisors: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let (ip, op, per_task) = (s.in_plane(), s.out_plane(), lane_planes(s));
    dx.par_chunks_mut(ip * per_task).enumerate().for_each_init(
        || win.scratch(s),
        |[down, dxt, dyt], (t, planes)| {
            for (b, planes) in planes.chunks_mut(ip * LANES).enumerate() {
                let first = t * per_task + b * LANES;
                let dy = &dy[first * op..][..planes.len() / ip * op];
                avg_backward_isa(Isa::best(), win, divisors, dy, planes, dyt, down, dxt);
            }
        },
    );
}

/// `v[k] += a[k]` lane by lane.
#[inline(always)]
fn add_lanes<T: Lane>(v: &mut Lanes<T>, a: &Lanes<T>) {
    for k in 0..LANES {
        v[k] = v[k] + a[k];
    }
}

/// [`avg_forward`] of up to [`LANES`] planes `x` into `y`. `xt` (`[H·W]`),
/// `across` (`[H · OW]`) and `yt` (`[OH · OW]`) are scratch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn avg_forward_lanes<T: Lane>(
    win: &Windows,
    divisors: &[T],
    x: &[T],
    y: &mut [T],
    xt: &mut [Lanes<T>],
    across: &mut [Lanes<T>],
    yt: &mut [Lanes<T>],
) {
    let ow = win.cols.len();
    to_lanes(x, xt);
    for (row, sums) in xt.chunks_exact(win.width).zip(across.chunks_exact_mut(ow)) {
        for (sum, c) in sums.iter_mut().zip(&win.cols) {
            // Starting from the first value, as `Iterator::sum` (from −0).
            let window = &row[c.clone()];
            *sum = window.first().copied().unwrap_or([T::zero(); LANES]);
            window.iter().skip(1).for_each(|v| add_lanes(sum, v));
        }
    }
    let outputs = yt.chunks_exact_mut(ow).zip(divisors.chunks_exact(ow));
    for ((out, divisors), r) in outputs.zip(&win.rows) {
        out.fill([T::zero(); LANES]);
        for sums in across[r.start * ow..r.end * ow].chunks_exact(ow) {
            out.iter_mut().zip(sums).for_each(|(o, v)| add_lanes(o, v));
        }
        for (o, &d) in out.iter_mut().zip(divisors) {
            o.iter_mut().for_each(|v| *v = *v / d);
        }
    }
    from_lanes(yt, y);
}

/// One plane of [`avg_forward`] where [`by_planes`]: `x` `[H, W]` into `y`
/// `[OH, W / 2]`; `scratch` holds `3 · H · W / 2` values. The window sums
/// along the rows come from the plane's even and odd columns, split at
/// once ([`take_even`]).
#[inline(always)]
fn avg_plane<T: Lane>(win: &Windows, divisors: &[T], x: &[T], y: &mut [T], scratch: &mut [T]) {
    let ow = win.cols.len();
    let half = x.len() / 2;
    let (even, rest) = scratch.split_at_mut(half);
    let (odd, sums) = rest.split_at_mut(half);
    // The rows' even and odd columns, the whole plane at once.
    take_even(even, x);
    take_even(odd, &x[1..]);
    // Output column `ox` of a row sums columns 2·ox − 1, 2·ox, 2·ox + 1
    // from the left.
    across(even, odd, ow, sums, |a, b| a + b, |v| v);
    let outputs = y.chunks_exact_mut(ow).zip(divisors.chunks_exact(ow));
    for ((out, divisors), r) in outputs.zip(&win.rows) {
        out.fill(T::zero());
        for row in sums[r.start * ow..r.end * ow].chunks_exact(ow) {
            out.iter_mut().zip(row).for_each(|(o, &v)| *o = *o + v);
        }
        for (o, &d) in out.iter_mut().zip(divisors) {
            *o = *o / d;
        }
    }
}

/// One plane of [`avg_backward`] where [`by_planes`]: `dy` `[OH, W / 2]`
/// into `dx` `[H, W]`, the same sums in the same order as the lanes
/// kernel; `scratch` holds `3 · H · W / 2` values. Down the columns each
/// output's share goes to its window's rows (`shares`, `[H, W / 2]`);
/// along a row, column `2 · ox` gets the share of output `ox` alone and
/// column `2 · ox + 1` those of `ox` and `ox + 1`, merged into the row at
/// once ([`merge_even_odd`]).
#[inline(always)]
fn avg_plane_backward<T: Lane>(
    win: &Windows,
    divisors: &[T],
    dy: &[T],
    dx: &mut [T],
    scratch: &mut [T],
) {
    let ow = win.cols.len();
    let half = dx.len() / 2;
    let (shares, rest) = scratch.split_at_mut(half);
    let (even, odd) = rest.split_at_mut(half);
    shares.fill(T::zero());
    let grads = dy.chunks_exact(ow).zip(divisors.chunks_exact(ow));
    for ((g, divisors), r) in grads.zip(&win.rows) {
        for share in shares[r.start * ow..r.end * ow].chunks_exact_mut(ow) {
            for ((d, &g), &div) in share.iter_mut().zip(g).zip(divisors) {
                *d = *d + g / div;
            }
        }
    }
    for (e, &v) in even.iter_mut().zip(shares.iter()) {
        *e = T::zero() + v;
    }
    for ((o, &e), &next) in odd.iter_mut().zip(even.iter()).zip(&shares[1..]) {
        *o = e + next;
    }
    // The last odd column of each row is in output `ow − 1`'s window only.
    for i in (ow - 1..half).step_by(ow) {
        odd[i] = even[i];
    }
    merge_even_odd(even, odd, dx);
}

crate::dispatch!(fn avg_plane_backward_isa<T: Lane>(win: &Windows, divisors: &[T], dy: &[T], dx: &mut [T], scratch: &mut [T]) => avg_plane_backward);

crate::dispatch!(fn avg_plane_isa<T: Lane>(win: &Windows, divisors: &[T], x: &[T], y: &mut [T], scratch: &mut [T]) => avg_plane);

/// [`avg_backward`] of up to [`LANES`] planes: `dy` into `dx`. `dyt`
/// (`[OH · OW]`), `down` (`[H · OW]`) and `dxt` (`[H·W]`) are scratch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn avg_backward_lanes<T: Lane>(
    win: &Windows,
    divisors: &[T],
    dy: &[T],
    dx: &mut [T],
    dyt: &mut [Lanes<T>],
    down: &mut [Lanes<T>],
    dxt: &mut [Lanes<T>],
) {
    let ow = win.cols.len();
    to_lanes(dy, dyt);
    down.fill([T::zero(); LANES]);
    let grads = dyt.chunks_exact(ow).zip(divisors.chunks_exact(ow));
    for ((g, divisors), r) in grads.zip(&win.rows) {
        for share in down[r.start * ow..r.end * ow].chunks_exact_mut(ow) {
            for ((d, g), &div) in share.iter_mut().zip(g).zip(divisors) {
                for k in 0..LANES {
                    d[k] = d[k] + g[k] / div;
                }
            }
        }
    }
    for (row, shares) in dxt.chunks_exact_mut(win.width).zip(down.chunks_exact(ow)) {
        row.fill([T::zero(); LANES]);
        for (g, c) in shares.iter().zip(&win.cols) {
            row[c.clone()].iter_mut().for_each(|v| add_lanes(v, g));
        }
    }
    from_lanes(dxt, dx);
}

crate::dispatch!(fn avg_forward_isa<T: Lane>(win: &Windows, divisors: &[T], x: &[T], y: &mut [T], xt: &mut [Lanes<T>], across: &mut [Lanes<T>], yt: &mut [Lanes<T>]) => avg_forward_lanes);
crate::dispatch!(fn avg_backward_isa<T: Lane>(win: &Windows, divisors: &[T], dy: &[T], dx: &mut [T], dyt: &mut [Lanes<T>], down: &mut [Lanes<T>], dxt: &mut [Lanes<T>]) => avg_backward_lanes);

/// Plain per-window average pooling, forward and input gradient: the
/// oracle for [`avg_forward`] and [`avg_backward`].
#[cfg(test)]
pub(crate) mod reference {
    use super::PoolShape;

    /// Max pooling with argmax by scanning each window: the first maximum
    /// in window order, a NaN winning.
    pub fn max_forward(s: &PoolShape, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
        let (ip, op) = (s.in_plane(), s.out_plane());
        for (p, (out, arg)) in y.chunks_mut(op).zip(arg.chunks_mut(op)).enumerate() {
            let plane = &x[p * ip..][..ip];
            s.each_window(|o, idx, _| {
                let mut best = idx[0];
                for &i in &idx[1..] {
                    if plane[i] > plane[best] || (plane[i].is_nan() && !plane[best].is_nan()) {
                        best = i;
                    }
                }
                out[o] = plane[best];
                arg[o] = best as u32;
            });
        }
    }

    pub fn avg_forward(s: &PoolShape, x: &[f32], y: &mut [f32]) {
        let (ip, op) = (s.in_plane(), s.out_plane());
        for (p, out) in y.chunks_mut(op).enumerate() {
            let plane = &x[p * ip..][..ip];
            s.each_window(|o, idx, div| {
                out[o] = idx.iter().map(|&i| plane[i]).sum::<f32>() / div as f32;
            });
        }
    }

    pub fn avg_backward(s: &PoolShape, dy: &[f32], dx: &mut [f32]) {
        let (ip, op) = (s.in_plane(), s.out_plane());
        for (p, plane) in dx.chunks_mut(ip).enumerate() {
            plane.fill(0.0);
            let grads = &dy[p * op..][..op];
            s.each_window(|o, idx, div| {
                let g = grads[o] / div as f32;
                idx.iter().for_each(|&i| plane[i] += g);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_errors() {
        let s = PoolShape {
            planes: 1,
            input: [4, 4],
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        }
        .validate()
        .unwrap();
        assert_eq!(s.output(), [2, 2]);
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let (mut y, mut a) = (vec![0.0; 4], vec![0; 4]);
        max_forward(&s, &x, &mut y, Some(&mut a)).unwrap();
        assert_eq!(y, [5.0, 7.0, 13.0, 15.0]);
        assert_eq!(a, [5, 7, 13, 15]);
        avg_forward(&s, &x, &mut y).unwrap();
        // Top-left window covers inputs 0, 1, 4, 5 and five padding zeros.
        assert_eq!(y[0], 10.0 / 9.0);
        assert!(
            PoolShape {
                padding: [2, 2],
                ..s
            }
            .validate()
            .is_err()
        );
        assert!(
            PoolShape {
                stride: [0, 1],
                ..s
            }
            .validate()
            .is_err()
        );
        assert!(max_forward(&s, &x[1..], &mut y, None).is_err());
    }

    #[test]
    fn halving_pools_match_the_windows() {
        // Every even size from one output up, rows shorter and longer than
        // a chunk of 8 or 16, and not square.
        let sizes = [
            [2, 2],
            [2, 6],
            [4, 4],
            [6, 14],
            [14, 14],
            [16, 30],
            [28, 28],
            [30, 56],
        ];
        for (i, input) in sizes.into_iter().enumerate() {
            let s = PoolShape {
                planes: 3,
                input,
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
            };
            assert!(halves(&s));
            let x = crate::random::uniform(&[3 * input[0] * input[1]], i as u64);
            let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let n = 3 * s.out_plane();
            let (mut got, mut want) = (vec![f32::NAN; n], vec![0.0; n]);
            avg_values(&s, &x, &mut got).unwrap();
            reference::avg_forward(&s, &x, &mut want);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6, "{s:?}: {g} vs {w}");
            }
            // Max pooling's values, the same windows; a NaN in some planes
            // (it wins).
            let mut x = x;
            if i % 2 == 1 {
                let at = (7 * i) % x.len();
                x[at] = f32::NAN;
            }
            let mut arg = vec![0; n];
            got.fill(0.0);
            max_forward(&s, &x, &mut got, None).unwrap();
            reference::max_forward(&s, &x, &mut want, &mut arg);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "max {s:?}");
        }
    }

    #[test]
    fn average_pooling_by_planes_equals_the_lanes_bit_for_bit() {
        // ShuffleNet's 3×3/2 pooling on rows long enough for the plane
        // kernel: square, odd height, wider than high; values with ties
        // and negative zeros.
        for (planes, input) in [(3, [28, 28]), (2, [31, 56]), (17, [12, 30])] {
            let s = PoolShape {
                planes,
                input,
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
            };
            assert!(by_planes(&s));
            let x: Vec<f32> = (0..planes * input[0] * input[1])
                .map(|i| match i % 11 {
                    0 => -0.0,
                    k => ((i * 37 % 23) as f32 - 11.0) / (k as f32 * 3.0),
                })
                .collect();
            let n = planes * s.out_plane();
            let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
            avg_forward(&s, &x, &mut got).unwrap();
            let (win, divisors) = Windows::new(&s);
            avg_forward_by_lanes(&s, &win, &divisors, &x, &mut want);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{s:?}");
            // The input gradient, the outputs serving as the upstream one.
            let dy = got;
            let (mut got, mut want) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            avg_backward(&s, &dy, &mut got).unwrap();
            avg_backward_by_lanes(&s, &win, &divisors, &dy, &mut want);
            assert_eq!(bits(&got), bits(&want), "backward {s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn separable_pooling_matches_the_windows(
            planes in 1usize..5, h in 1usize..12, w in 1usize..40,
            kh in 1usize..5, kw in 1usize..5, sh in 1usize..4, sw in 1usize..4,
            ph in 0usize..3, pw in 0usize..3, seed in 0u64..100,
        ) {
            let s = PoolShape { planes, input: [h, w], kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw] };
            let Ok(s) = s.validate() else { return Ok(()) };
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
            let x: Vec<f32> = (0..planes * h * w).map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0)).collect();
            let n = planes * s.out_plane();
            let dy: Vec<f32> = (0..n).map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0)).collect();
            let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
            avg_forward(&s, &x, &mut got).unwrap();
            reference::avg_forward(&s, &x, &mut want);
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert!((g - w).abs() <= 1e-5, "forward {g} vs {w}");
            }
            avg_values(&s, &x, &mut got).unwrap();
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert!((g - w).abs() <= 1e-5, "separable average {g} vs {w}");
            }
            // Max pooling against the window scan, on values rounded to
            // tenths, no −0 (ties: the first in window order wins), with a NaN or
            // two in some cases (a NaN wins); the values alone (separable)
            // must agree too.
            let mut x: Vec<f32> = x.iter().map(|v| (v * 10.0).round() / 10.0 + 0.0).collect();
            if seed % 3 == 0 {
                for k in 0..1 + seed as usize % 2 {
                    let at = (seed as usize * (k + 7)) % x.len();
                    x[at] = f32::NAN;
                }
            }
            let (mut got, mut want, mut arg, mut want_arg) = (vec![0.0; n], vec![0.0; n], vec![0; n], vec![0; n]);
            max_forward(&s, &x, &mut got, Some(&mut arg)).unwrap();
            reference::max_forward(&s, &x, &mut want, &mut want_arg);
            proptest::prop_assert_eq!(&arg, &want_arg);
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert!(g.to_bits() == w.to_bits(), "max {g} vs {w}");
            }
            max_forward(&s, &x, &mut got, None).unwrap();
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert!(g.to_bits() == w.to_bits(), "separable max {g} vs {w}");
            }
            let (mut got, mut want) = (vec![1.0; x.len()], vec![0.0; x.len()]);
            avg_backward(&s, &dy, &mut got).unwrap();
            reference::avg_backward(&s, &dy, &mut want);
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert!((g - w).abs() <= 1e-5, "backward {g} vs {w}");
            }
        }
    }
}

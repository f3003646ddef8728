//! Fast grouped conv2d forward (float32) as one GEMM per (image, group):
//! `Y[n, group g] (C_out/g × P) = W_g (C_out/g × K) · cols (K × P)`, with
//! `P = H_out · W_out` and `K = C_in/g · kH · kW`, written straight into the
//! output's channels of that group: no concatenation. Pointwise layers (1×1,
//! stride 1, no padding) read the input in place; the others gather a
//! per-thread column buffer (im2col of one image and group). One parallel
//! region over (image × group); the GEMM itself runs single-threaded inside
//! it unless there are fewer tasks than threads.

use super::conv::Conv2dShape;
use super::matmul::{Mat, inner_parallelism, matmul};
use super::pointwise::{self, Epilogue, PackedWeights, Placement, PointwiseShape, Residual};
use super::row_dots::RowDots;
use crate::error::Result;
use crate::signal::Scalar;
use crate::simd::Isa;
use gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// `y = conv2d(x, w) + bias` for float32 NCHW data; `y` must hold
/// `batch × C_out × H_out × W_out` values. Same results as
/// [`forward_ref`](super::conv::forward_ref) up to summation order.
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    s.check_lens(x.len(), w.len(), bias.map(<[f32]>::len), y.len())?;
    let Sizes {
        p, k, pointwise, ..
    } = Sizes::new(s);
    if in_place(s) {
        let pack = |ps: &PointwiseShape| PackedWeights::new(ps, w);
        return in_place_pointwise(s, [s.in_channels, s.out_channels], x, pack, bias, y);
    }
    if let Some(images) = packed_images(s) {
        let lhs = |g| Mat::rows(s.weight_group(w, g), k);
        packed_pointwise(s, images, x, y, lhs, bias);
        return Ok(());
    }
    let inner = inner_parallelism(s.batch * s.groups);
    y.par_chunks_mut(s.group_out() * p)
        .enumerate()
        .for_each_init(
            || Sizes::new(s).cols(),
            |cols, (task, out)| {
                let (n, g) = (task / s.groups, task % s.groups);
                let rhs = columns(s, pointwise, s.input_group(x, n, g), cols);
                if let Some(b) = bias {
                    for (row, &bv) in out.chunks_exact_mut(p).zip(&b[g * s.group_out()..]) {
                        row.fill(bv);
                    }
                }
                let lhs = Mat::rows(s.weight_group(w, g), k);
                matmul(out, p, bias.is_some(), lhs, Mat::rows(rhs, p), inner);
            },
        );
    Ok(())
}

/// Gradients of `Σ dy · conv2d(x, w)` for float32 NCHW data, each computed
/// only when its buffer is given: `dx` (shape of `x`), `dw` (shape of `w`),
/// `db` (`[C_out]`). Every buffer is overwritten.
///
/// - `dx`: per (image, group), `dcols = W_gᵀ · dY_g` (`K × P`), scattered
///   back onto the input (col2im; pointwise layers write `dx` directly).
///   Tasks own disjoint parts of `dx`.
/// - `dw`: `dW_g = Σ_n dY_{n,g} · cols_{n,g}ᵀ`. The batch is cut into a
///   number of chunks fixed by the thread count and the shape; each
///   (chunk, group) task sums into its own partial buffer and the partials
///   are added in chunk order, so results are deterministic for a fixed
///   thread count. Groups with few weights over long planes sum their
///   dot products in register tiles ([`RowDots`]) instead of `gemm`.
pub fn backward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    s.check_grad_lens(x, w, dy, [dx.as_deref(), dw.as_deref(), db.as_deref()])?;
    if let Some(dx) = dx {
        input_grad(s, w, dy, dx)?;
    }
    if let Some(dw) = dw {
        weight_grad(s, x, dy, dw);
    }
    if let Some(db) = db {
        super::conv::bias_grad(s, dy, db);
    }
    Ok(())
}

/// `dx` from `dy`: see [`backward`].
fn input_grad(s: &Conv2dShape, w: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let Sizes {
        p, k, pointwise, ..
    } = Sizes::new(s);
    if in_place(s) {
        // The pointwise conv of `dy` with each group's weights transposed.
        let pack = |ps: &PointwiseShape| PackedWeights::transposed(ps, w);
        return in_place_pointwise(s, [s.out_channels, s.in_channels], dy, pack, None, dx);
    }
    if let Some(images) = packed_images(s) {
        let lhs = |g| Mat::cols(s.weight_group(w, g), k);
        packed_pointwise(s, images, dy, dx, lhs, None);
        return Ok(());
    }
    let inner = inner_parallelism(s.batch * s.groups);
    let group_len = dx.len() / (s.batch * s.groups);
    dx.par_chunks_mut(group_len).enumerate().for_each_init(
        || Sizes::new(s).cols(),
        |dcols, (task, dx_group)| {
            let (n, g) = (task / s.groups, task % s.groups);
            let lhs = Mat::cols(s.weight_group(w, g), k);
            let rhs = Mat::rows(s.output_group(dy, n, g), p);
            if pointwise {
                matmul(dx_group, p, false, lhs, rhs, inner);
            } else {
                matmul(dcols, p, false, lhs, rhs, inner);
                col2im(s, dcols, dx_group);
            }
        },
    );
    Ok(())
}

/// `dw` from `x` and `dy`: see [`backward`].
fn weight_grad(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let Sizes {
        p, k, pointwise, ..
    } = Sizes::new(s);
    let packed = packed_images(s).is_some();
    let rows = [s.group_out(), k];
    let use_dots = !packed && RowDots::suits(rows, p);
    let isa = Isa::best();
    super::conv::weight_grad_tasks(
        s,
        dw,
        || (Sizes::new(s).cols(), use_dots.then(|| RowDots::new(rows))),
        |(cols, dots), images, g, dw_group, tasks| {
            let inner = inner_parallelism(tasks);
            if packed {
                // One GEMM over the run of images: `dY_g · X_gᵀ` with both
                // packed as `[channels × images·P]` matrices.
                let images: Vec<usize> = images.collect();
                let width = images.len() * p;
                let (co, ci) = (s.group_out(), s.group_in());
                let grads = pack(dy, s.out_channels, p, g * co..(g + 1) * co, &images);
                let inputs = pack(x, s.in_channels, p, g * ci..(g + 1) * ci, &images);
                let (lhs, rhs) = (Mat::rows(&grads, width), Mat::cols(&inputs, width));
                matmul(dw_group, k, false, lhs, rhs, inner);
                return;
            }
            if let Some(dots) = dots {
                for n in images {
                    let rhs = columns(s, pointwise, s.input_group(x, n, g), cols);
                    dots.add(isa, s.output_group(dy, n, g), rhs, p);
                }
                dots.finish(dw_group);
                return;
            }
            for (i, n) in images.enumerate() {
                let rhs = columns(s, pointwise, s.input_group(x, n, g), cols);
                let lhs = Mat::rows(s.output_group(dy, n, g), p);
                matmul(dw_group, k, i > 0, lhs, Mat::cols(rhs, p), inner);
            }
        },
    );
}

/// Whether a pointwise layer runs on the inference kernels of
/// [`pointwise`] (weights packed per call, inputs read in place, results
/// stored once) instead of [`packed_pointwise`]'s copies and GEMMs:
/// planes of 64 positions (8 × 8) with at most 256 input and output
/// channels per group. `gconv bench train`, alternating
/// rounds, ms per step: the Fashion-MNIST model (its 8 × 8 layers have
/// 54–216 channels), six rounds, 103.2–115.2 with GEMMs, 95.6–106.3 with
/// these kernels forward and for the input gradient;
/// `shufflenet_g3_w1_cifar`, three rounds, 207.4–233.0 against
/// 204.9–223.9. Same values: the kernels add the products in the GEMMs'
/// order. On one thread, batch 32, the GEMMs were ahead on 4 × 4 planes
/// (432 → 108: 0.38 against 0.80 ms), 7 × 7 (576 → 144: 1.93 against
/// 2.46), 14 × 14 and 16 × 16 (108 → 27: 0.34 against 0.41) and on
/// ResNeXt-29's 8 × 8 layers (512 → 1024: 11.6 against 14.2).
fn in_place(s: &Conv2dShape) -> bool {
    let Sizes { p, pointwise, .. } = Sizes::new(s);
    pointwise && p == 64 && s.group_in() <= 256 && s.group_out() <= 256
}

/// `dst = conv1x1(src) + bias` on the [`pointwise`] kernels, `src` with
/// `channels[0]` and `dst` with `channels[1]` channels (the planes and
/// groups of `s`), with the weights that `pack` packs for that shape:
/// [`PackedWeights::new`] forward, [`PackedWeights::transposed`] for the
/// input gradient.
fn in_place_pointwise(
    s: &Conv2dShape,
    [cin, cout]: [usize; 2],
    src: &[f32],
    pack: impl FnOnce(&PointwiseShape) -> Result<PackedWeights>,
    bias: Option<&[f32]>,
    dst: &mut [f32],
) -> Result<()> {
    let ps = PointwiseShape {
        batch: s.batch,
        in_channels: cin,
        out_channels: cout,
        plane: Sizes::new(s).p,
        groups: s.groups,
    };
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = vec![0f32; cout];
            &zeros
        }
    };
    let ep = Epilogue {
        bias,
        residual: Residual::None,
        relu: false,
    };
    let packed = pack(&ps)?;
    pointwise::forward(
        &ps,
        src,
        &packed,
        ep,
        Placement::contiguous(&ps, cout, 0),
        dst,
    )
}

/// Pointwise layers on small planes run one GEMM per (group, run of
/// images) on packed copies instead of per (image, group): a 4×4 plane
/// would otherwise make GEMMs 16 columns wide. Planes of 128 positions or
/// more (14 × 14 up) stay unpacked: packing three 14 × 14 images into 588
/// columns made `gemm` run ShuffleNet's 288 → 72 layer at a third of its
/// unpacked speed (2.8 against 1.2 ms at batch 16, one thread), and
/// packing saved nothing on 196 columns either. The images per task, when
/// that applies: enough for about 512 columns, and at least as many
/// tasks as threads. (Forward and input gradient check [`in_place`]
/// first; weight gradients take the packed GEMMs on 8 × 8 planes too.)
fn packed_images(s: &Conv2dShape) -> Option<usize> {
    let Sizes { p, pointwise, .. } = Sizes::new(s);
    if !pointwise || p >= 128 || s.batch < 2 {
        return None;
    }
    let threads = rayon::current_num_threads();
    Some(512usize.div_ceil(p).min(s.batch.div_ceil(threads)).max(1))
}

/// `dst = lhs(g) · src` per group for a pointwise layer (plus `bias`),
/// with `src` and `dst` NCHW: in parallel over runs of `per_task` images,
/// each group's operand is packed into a `[rows × images·P]` matrix, one
/// GEMM computes the group's `[rows' × images·P]` result, and that is
/// scattered into the run's part of `dst`.
fn packed_pointwise<'w>(
    s: &Conv2dShape,
    per_task: usize,
    src: &[f32],
    dst: &mut [f32],
    lhs: impl Fn(usize) -> Mat<'w> + Sync,
    bias: Option<&[f32]>,
) {
    let p = Sizes::new(s).p;
    let (src_channels, dst_channels) = (src.len() / (s.batch * p), dst.len() / (s.batch * p));
    let (src_rows, rows) = (src_channels / s.groups, dst_channels / s.groups);
    dst.par_chunks_mut(per_task * dst_channels * p)
        .enumerate()
        .for_each(|(t, chunk)| {
            let images: Vec<usize> = (t * per_task..)
                .take(chunk.len() / (dst_channels * p))
                .collect();
            let cols = images.len() * p;
            let mut out = vec![0f32; rows * cols];
            for g in 0..s.groups {
                let packed = pack(
                    src,
                    src_channels,
                    p,
                    g * src_rows..(g + 1) * src_rows,
                    &images,
                );
                if let Some(b) = bias {
                    for (row, &bv) in out.chunks_exact_mut(cols).zip(&b[g * rows..]) {
                        row.fill(bv);
                    }
                }
                let rhs = Mat::rows(&packed, cols);
                matmul(
                    &mut out,
                    cols,
                    bias.is_some(),
                    lhs(g),
                    rhs,
                    Parallelism::None,
                );
                for (r, row) in out.chunks_exact(cols).enumerate() {
                    for (j, plane) in row.chunks_exact(p).enumerate() {
                        chunk[(j * dst_channels + g * rows + r) * p..][..p].copy_from_slice(plane);
                    }
                }
            }
        });
}

/// Channels `channels` of `images` of NCHW `src` (`total` channels of `p`
/// values) as a `[channels × images·p]` matrix.
fn pack(
    src: &[f32],
    total: usize,
    p: usize,
    channels: std::ops::Range<usize>,
    images: &[usize],
) -> Vec<f32> {
    let mut dst = Vec::with_capacity(channels.len() * images.len() * p);
    for c in channels {
        for &n in images {
            dst.extend_from_slice(&src[(n * total + c) * p..][..p]);
        }
    }
    dst
}

/// The `K × P` column matrix of one (image, group) input `x_group`: the
/// input itself for pointwise layers, else its im2col in `cols`.
fn columns<'a>(
    s: &Conv2dShape,
    pointwise: bool,
    x_group: &'a [f32],
    cols: &'a mut [f32],
) -> &'a [f32] {
    if pointwise {
        x_group
    } else {
        im2col(s, x_group, cols);
        cols
    }
}

/// The GEMM sizes of one (image, group) task.
struct Sizes {
    /// Output positions, `H_out · W_out`.
    p: usize,
    /// Reduction length, `C_in/g · kH · kW`.
    k: usize,
    /// 1×1, stride 1, no padding: the input is the column matrix itself.
    pointwise: bool,
}

impl Sizes {
    fn new(s: &Conv2dShape) -> Sizes {
        let [oh, ow] = s.output();
        Sizes {
            p: oh * ow,
            k: s.group_in() * s.kernel[0] * s.kernel[1],
            pointwise: s.kernel == [1, 1] && s.stride == [1, 1] && s.padding == [0, 0],
        }
    }

    /// A per-thread column buffer (`K × P`), empty for pointwise layers.
    fn cols(&self) -> Vec<f32> {
        vec![0f32; if self.pointwise { 0 } else { self.k * self.p }]
    }
}

/// For kernel column `kx`: the output columns `lo..hi` whose input column
/// `ox · stride_w + kx · dilation_w − pad_w` lies inside the image, and that
/// input column for `ox = lo`.
fn valid_columns(s: &Conv2dShape, kx: usize) -> (usize, usize, usize) {
    let ow = s.output()[1];
    let (sw, off) = (s.stride[1], kx * s.dilation[1]);
    let pad = s.padding[1];
    let lo = pad.saturating_sub(off).div_ceil(sw).min(ow);
    let hi = (s.input[1] + pad)
        .saturating_sub(off)
        .div_ceil(sw)
        .min(ow)
        .max(lo);
    (lo, hi, (lo * sw + off).saturating_sub(pad))
}

/// Calls `f(segment, input_row, columns)` for every output row of every
/// column-buffer row `(c · kH + ky) · kW + kx` of one image and group:
/// `segment` is the offset of its `W_out` values in the column buffer,
/// `input_row` the offset of the input row it reads (`None` in the padding)
/// and `columns` the result of [`valid_columns`] for `kx`.
fn each_segment(s: &Conv2dShape, mut f: impl FnMut(usize, Option<usize>, (usize, usize, usize))) {
    let [oh, ow] = s.output();
    let [kh, kw] = s.kernel;
    let columns: Vec<_> = (0..kw).map(|kx| valid_columns(s, kx)).collect();
    let mut segment = 0;
    for c in 0..s.group_in() {
        for ky in 0..kh {
            for &cols in &columns {
                for oy in 0..oh {
                    f(segment, input_row(s, c, ky, oy), cols);
                    segment += ow;
                }
            }
        }
    }
}

/// The offset of the input row (of channel `c` in the group's planes)
/// that output row `oy` reads through kernel row `ky`, or `None` in the
/// padding.
fn input_row(s: &Conv2dShape, c: usize, ky: usize, oy: usize) -> Option<usize> {
    let [h, w] = s.input;
    let iy = (oy * s.stride[0] + ky * s.dilation[0]).checked_sub(s.padding[0]);
    iy.filter(|&iy| iy < h).map(|iy| (c * h + iy) * w)
}

/// Column buffer of one image and group: row `(c · kH + ky) · kW + kx`,
/// column `oy · W_out + ox` holds the input value under that kernel tap
/// (zero in the padding). `x` is the group's `C_in/g` input planes.
pub(crate) fn im2col(s: &Conv2dShape, x: &[f32], cols: &mut [f32]) {
    let unfold = Unfold::new(s);
    let [oh, ow] = s.output();
    for (row, dst) in cols.chunks_exact_mut(oh * ow).enumerate() {
        unfold.row(x, row, dst);
    }
}

/// Height and width of an input plane of `s` with its zero padding.
fn padded_size(s: &Conv2dShape) -> [usize; 2] {
    let (i, p) = (s.input, s.padding);
    [i[0] + 2 * p[0], i[1] + 2 * p[1]]
}

/// [`im2col`]'s rows, piece by piece: the inference kernel fills its
/// column tiles straight from the input with it, without the buffer.
pub(crate) struct Unfold {
    s: Conv2dShape,
    out_w: usize,
    /// Per row `(c · kH + ky) · kW + kx`: `c`, `ky`, and
    /// [`valid_columns`] of `kx`.
    rows: Vec<(usize, usize, (usize, usize, usize))>,
    /// Per row, where it reads output position 0 in the zero-padded
    /// input planes (see [`Unfold::pad`]).
    padded_rows: Vec<usize>,
}

impl Unfold {
    pub(crate) fn new(s: &Conv2dShape) -> Unfold {
        let [kh, kw] = s.kernel;
        let columns: Vec<_> = (0..kw).map(|kx| valid_columns(s, kx)).collect();
        let rows: Vec<_> = (0..s.group_in() * kh * kw)
            .map(|row| (row / (kh * kw), row / kw % kh, columns[row % kw]))
            .collect();
        let ([h, w], d) = (padded_size(s), s.dilation);
        let padded_rows = rows
            .iter()
            .enumerate()
            .map(|(r, &(c, ky, _))| (c * h + ky * d[0]) * w + r % kw * d[1])
            .collect();
        Unfold {
            s: *s,
            out_w: s.output()[1],
            rows,
            padded_rows,
        }
    }

    /// Row `row` of [`im2col`] at output row `oy`, columns `ox .. ox +
    /// dst.len()` (within the row), into `dst`; `x` is the group's input
    /// planes.
    #[inline(always)]
    pub(crate) fn segment<T: Scalar>(
        &self,
        x: &[T],
        row: usize,
        oy: usize,
        ox: usize,
        dst: &mut [T],
    ) {
        let (c, ky, (lo, hi, ix)) = self.rows[row];
        let Some(start) = input_row(&self.s, c, ky, oy) else {
            dst.fill(T::zero());
            return;
        };
        debug_assert!(ox + dst.len() <= self.out_w);
        // Output columns `lo .. hi` read the input from column `ix`.
        let (a, b) = (lo.clamp(ox, ox + dst.len()), hi.clamp(ox, ox + dst.len()));
        dst[..a - ox].fill(T::zero());
        dst[b - ox..].fill(T::zero());
        if a == b {
            return;
        }
        let sw = self.s.stride[1];
        let src = &x[start + ix + (a - lo) * sw..];
        let dst = &mut dst[a - ox..b - ox];
        match sw {
            1 => dst.copy_from_slice(&src[..dst.len()]),
            // Vector permutes rather than a gather (stems of stride 2).
            2 => super::phase::take_even(dst, src),
            _ => {
                for (d, v) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                    *d = *v;
                }
            }
        }
    }

    /// Row `row` of [`im2col`] (`H_out · W_out` values) into `dst`.
    pub(crate) fn row<T: Scalar>(&self, x: &[T], row: usize, dst: &mut [T]) {
        self.columns(x, row, 0, dst);
    }

    /// Row `row` of [`im2col`], columns `first .. first + dst.len()`
    /// (across output rows), into `dst`.
    #[inline(always)]
    pub(crate) fn columns<T: Scalar>(&self, x: &[T], row: usize, first: usize, dst: &mut [T]) {
        let mut at = 0;
        while at < dst.len() {
            let (oy, ox) = ((first + at) / self.out_w, (first + at) % self.out_w);
            let len = (self.out_w - ox).min(dst.len() - at);
            self.segment(x, row, oy, ox, &mut dst[at..][..len]);
            at += len;
        }
    }

    /// Output columns per output row.
    pub(crate) fn out_w(&self) -> usize {
        self.out_w
    }

    /// The column stride.
    pub(crate) fn stride_w(&self) -> usize {
        self.s.stride[1]
    }

    /// Values in the group's zero-padded input planes (see [`Unfold::pad`]).
    pub(crate) fn padded_len(&self) -> usize {
        let [h, w] = padded_size(&self.s);
        self.s.group_in() * h * w
    }

    /// The rows of the group's zero-padded input planes that output
    /// columns `cols` (`oy · W_out + ox`) read, from the input planes `x`
    /// into `dst` (at least [`Unfold::padded_len`] values; the rest left
    /// as they are): matrix row `r` at column `c` is then
    /// `dst[padded_rows()[r] + padded_column(c)]`.
    #[inline(always)]
    pub(crate) fn pad<T: Scalar>(&self, x: &[T], cols: Range<usize>, dst: &mut [T]) {
        let ([h, w], [ph, pw]) = (self.s.input, self.s.padding);
        let [height, width] = padded_size(&self.s);
        let (first, last) = (cols.start / self.out_w, (cols.end - 1) / self.out_w);
        let rows = first * self.s.stride[0]
            ..(last * self.s.stride[0] + (self.s.kernel[0] - 1) * self.s.dilation[0] + 1)
                .min(height);
        // Zero the rows (one fill where they are whole planes), then copy
        // the input rows among them.
        let planes = &mut dst[..self.padded_len()];
        if rows.len() == height {
            planes.fill(T::zero());
        } else {
            for plane in planes.chunks_exact_mut(height * width) {
                plane[rows.start * width..rows.end * width].fill(T::zero());
            }
        }
        let inputs = rows.start.clamp(ph, ph + h)..rows.end.clamp(ph, ph + h);
        for (src, plane) in x
            .chunks_exact(h * w)
            .zip(planes.chunks_exact_mut(height * width))
        {
            for py in inputs.clone() {
                let row = &src[(py - ph) * w..][..w];
                crate::simd::copy(&mut plane[py * width + pw..][..w], row);
            }
        }
    }

    /// Per matrix row `(c · kH + ky) · kW + kx`, where it reads output
    /// position 0 in the padded planes.
    pub(crate) fn padded_rows(&self) -> &[usize] {
        &self.padded_rows
    }

    /// How far output position `col` (`oy · W_out + ox`) reads from
    /// output position 0 in the padded planes.
    pub(crate) fn padded_column(&self, col: usize) -> usize {
        let (oy, ox) = (col / self.out_w, col % self.out_w);
        oy * self.s.stride[0] * padded_size(&self.s)[1] + ox * self.s.stride[1]
    }
}

/// The adjoint of [`im2col`]: adds every column-buffer value onto the
/// input position it was read from. `dx` (the group's `C_in/g` planes) is
/// overwritten.
fn col2im(s: &Conv2dShape, cols: &[f32], dx: &mut [f32]) {
    let ow = s.output()[1];
    let sw = s.stride[1];
    dx.fill(0.0);
    each_segment(s, |seg, row, (lo, hi, ix)| {
        let Some(row) = row else { return };
        let src = &cols[seg..][..ow][lo..hi];
        let dst = &mut dx[row + ix..];
        if sw == 1 {
            for (d, v) in dst.iter_mut().zip(src) {
                *d += *v;
            }
        } else {
            for (d, v) in dst.iter_mut().step_by(sw).zip(src) {
                *d += *v;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{
        assert_backward_matches_reference, assert_forward_matches_reference, test_shape,
    };

    #[test]
    fn matches_the_reference_on_many_shapes() {
        // (batch, c_in, c_out, h, w, k, stride, pad, dil, groups, bias)
        let cases = [
            (2, 8, 16, 5, 7, [1, 1], [1, 1], [0, 0], [1, 1], 1, false),
            (1, 16, 24, 7, 9, [1, 1], [1, 1], [0, 0], [1, 1], 8, true),
            (2, 16, 16, 7, 9, [1, 1], [2, 2], [0, 0], [1, 1], 4, false),
            (3, 6, 9, 9, 7, [3, 3], [2, 2], [1, 1], [1, 1], 3, true),
            (1, 64, 64, 8, 8, [3, 3], [1, 1], [1, 1], [1, 1], 32, false),
            (2, 12, 12, 9, 11, [3, 3], [1, 1], [1, 1], [1, 1], 12, true),
            (2, 7, 7, 10, 9, [3, 3], [2, 1], [2, 1], [2, 1], 7, false),
            (1, 3, 8, 13, 11, [7, 7], [2, 2], [3, 3], [1, 1], 1, true),
            (2, 5, 10, 6, 8, [3, 5], [1, 2], [1, 2], [1, 1], 5, false),
            (5, 6, 6, 5, 5, [3, 3], [1, 1], [1, 1], [1, 1], 1, true),
            (7, 8, 4, 4, 6, [1, 1], [1, 1], [0, 0], [1, 1], 2, false),
            (6, 12, 9, 3, 5, [1, 1], [1, 1], [0, 0], [1, 1], 3, true),
            (3, 9, 6, 8, 7, [5, 5], [3, 2], [2, 0], [1, 1], 3, false),
            (2, 4, 4, 9, 9, [3, 3], [2, 2], [0, 0], [3, 3], 2, false),
            // Planes of 64 positions: the in-place pointwise kernels.
            (3, 12, 30, 8, 8, [1, 1], [1, 1], [0, 0], [1, 1], 3, true),
            (2, 21, 5, 4, 16, [1, 1], [1, 1], [0, 0], [1, 1], 1, false),
        ];
        for (i, &(batch, cin, cout, h, w, k, stride, pad, dil, groups, bias)) in
            cases.iter().enumerate()
        {
            let s = test_shape(batch, [cin, cout, groups], [h, w], k, [stride, pad, dil]);
            assert_eq!(in_place(&s), h * w == 64 && k == [1, 1], "{s:?}");
            assert_forward_matches_reference(&s, bias, i as u64, |x, w, b, y| {
                forward(&s, x, w, b, y)
            });
            assert_backward_matches_reference(&s, i as u64, |x, w, dy, dx, dw, db| {
                backward(&s, x, w, dy, Some(dx), Some(dw), Some(db))
            });
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let s = Conv2dShape::new(1, 2, 2, [3, 3], [1, 1], 1);
        let mut y = vec![0.0; 18];
        assert!(forward(&s, &[0.0; 17], &[0.0; 4], None, &mut y).is_err());
        assert!(forward(&s, &[0.0; 18], &[0.0; 4], Some(&[0.0]), &mut y).is_err());
    }
}

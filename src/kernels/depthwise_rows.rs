//! Depthwise 3×3 convolution (one input and one output channel per group)
//! on AVX-512, forward and stride-1 input gradient: each output row is
//! summed straight from the padded, phase-split input plane ([`Geometry`])
//! in registers and stored into the output, vectors of 16 positions along
//! the row, register tiles of a few rows × up to four vectors, the last
//! vector of a row stored under a mask.
//!
//! The [`direct`](super::direct) kernel sums whole padded rows (the
//! padding columns too) into a staging plane and then gathers the output
//! rows out of it (cuts the input gradient's padding off), and its
//! auto-vectorised tap loop reloads the tap offsets from the stack. Here
//! each tap is one load and one fused multiply-add per vector. Harness
//! (`direct::forward` / `backward` alone), batch 32, the fastest of 41
//! runs (201 on one thread), the range over two rounds (ms):
//!
//! | layer | threads | pass | direct | rows |
//! | --- | --- | --- | --- | --- |
//! | 60 ch, 28 × 28 | 2 | forward | 0.41–0.45 | 0.30–0.34 |
//! | 60 ch, 56 × 56, stride 2 | 2 | forward | 0.93–1.00 | 0.79–0.85 |
//! | 120 ch, 14 × 14 | 2 | forward | 0.27–0.31 | 0.19–0.20 |
//! | 27 ch, 16 × 16 | 1 | forward | 0.13–0.16 | 0.09–0.11 |
//! | 60 ch, 28 × 28 | 2 | input gradient | 0.43–0.45 | 0.35–0.41 |
//! | 27 ch, 16 × 16 | 1 | input gradient | 0.16–0.19 | 0.12–0.13 |
//! | 240 ch, 7 × 7, batch 16 | 1 | input gradient | 0.37 | 0.19–0.21 |
//!
//! Each output is its bias (or zero) plus the taps' products in the
//! kernel's tap order, one fused multiply-add each, a tap in the padding
//! adding a zero: the same sums in the same order as the direct kernel, so
//! the results are identical.

use super::conv::Conv2dShape;
use super::phase::Geometry;
use crate::simd::Isa;
use rayon::prelude::*;

/// Taps of the kernels this module takes (3×3).
const TAPS: usize = 9;

/// Positions per vector (AVX-512, `f32`).
const LANES: usize = 16;

/// The narrowest output rows taken. Rows of 7 use 7 lanes of 16 and still
/// beat the direct kernel, which runs a whole plane as one long row:
/// batch-16 layers of 240 channels on 7 × 7, 1 thread, 0.27–0.31 →
/// 0.20 ms; ShuffleNet g8's at batch 1 0.022 → 0.015 ms. Narrower rows
/// were not measured (planes of up to 32 positions go to the
/// [`depthwise`](super::depthwise) lanes kernel).
const MIN_WIDTH: usize = 7;

/// Whether [`forward`] takes `s` with `isa`: a depthwise 3×3 layer (any
/// stride, padding and dilation) with output rows of at least
/// [`MIN_WIDTH`] positions, on a processor with AVX-512.
pub fn suits(s: &Conv2dShape, isa: Isa) -> bool {
    cfg!(target_arch = "x86_64")
        && isa.supported() == Isa::Avx512
        && s.group_in() == 1
        && s.group_out() == 1
        && s.kernel[0] * s.kernel[1] == TAPS
        && s.output()[1] >= MIN_WIDTH
}

/// Whether [`input_grad`] takes `s` with `isa`: a layer that [`suits`]
/// this module with stride 1 and padding at most twice the dilation, whose
/// input gradient is then a convolution of the output gradient as well.
pub fn suits_input_grad(s: &Conv2dShape, isa: Isa) -> bool {
    suits(s, isa) && s.stride == [1, 1] && adjoint(s).is_some()
}

/// `y = conv2d(x, w) + bias` for a layer that [`suits`] this module, output
/// channel `g` reading input channel `source(g)` (the identity, or a
/// channel shuffle folded into the layer). Shapes: `x` `[N, C, H, W]`, `w`
/// `[C, 1, 3, 3]`, `bias` `[C]`, `y` `[N, C, H_out, W_out]`; the caller
/// has checked the lengths.
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    source: impl Fn(usize) -> usize + Sync,
) {
    let geo = Geometry::new(s);
    // Tap `(ky, kx)` reads `taps[3 · ky] + taps[kx]` past the output
    // position (`taps[0]` is 0).
    let rows = std::array::from_fn(|i| geo.taps[3 * i]);
    let cols = std::array::from_fn(|i| geo.taps[i]);
    run(s, &geo, [rows, cols], x, w, bias, y, |g| (source(g), g));
}

/// The input gradient `dx` of a layer that [`suits_input_grad`], from the
/// output gradient `dy`: input channel `j`'s comes from the output
/// channel `reader(j)` that reads it (the identity, or the inverse of a
/// folded shuffle) and its kernel. Shapes: `w` `[C, 1, 3, 3]`, `dy` `[N,
/// C, H_out, W_out]`, `dx` `[N, C, H, W]`, overwritten; the caller has
/// checked the lengths.
///
/// `dx` is the convolution of `dy` with the kernel turned around, padded
/// by `2 · dilation − padding`; each input's sum runs over the original
/// taps in order from zero, as the direct kernel's input gradient does
/// (same values).
pub fn input_grad(
    s: &Conv2dShape,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    reader: impl Fn(usize) -> usize + Sync,
) {
    let a = adjoint(s).expect("suits_input_grad");
    let geo = Geometry::new(&a);
    // The turned-around kernel's tap `8 − t` meets the original tap `t`.
    let rows = std::array::from_fn(|i| geo.taps[3 * (2 - i)]);
    let cols = std::array::from_fn(|i| geo.taps[2 - i]);
    run(&a, &geo, [rows, cols], dy, w, None, dx, |j| {
        (reader(j), reader(j))
    });
}

/// The stride-1 convolution that maps the output gradient of `s` to its
/// input gradient (kernel turned around, not represented here), if the
/// padding allows.
fn adjoint(s: &Conv2dShape) -> Option<Conv2dShape> {
    let [oh, ow] = s.output();
    let pad = |d: usize| (2 * s.dilation[d]).checked_sub(s.padding[d]);
    let a = Conv2dShape {
        padding: [pad(0)?, pad(1)?],
        dilation: s.dilation,
        ..Conv2dShape::new(s.batch, s.groups, s.groups, [oh, ow], s.kernel, s.groups)
    }
    .validate()
    .ok()?;
    (a.output() == s.input).then_some(a)
}

/// The planes of `t` (a depthwise 3×3 convolution of `src` into `out`):
/// output channel `g` reads the input channel and kernel `channel(g)`
/// names, tap `(ky, kx)` at `rows[ky] + cols[kx]` past each output
/// position in the padded layout `geo`, the taps summed from the bias (or
/// zero) in the order of `w`'s kernel.
#[allow(clippy::too_many_arguments)]
fn run(
    t: &Conv2dShape,
    geo: &Geometry,
    [rows, cols]: [[usize; 3]; 2],
    src: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    channel: impl Fn(usize) -> (usize, usize) + Sync,
) {
    let [oh, ow] = t.output();
    let (plane_in, plane_out) = (t.input[0] * t.input[1], oh * ow);
    // The farthest value a tile reads: the last row's last vector at the
    // farthest tap.
    let reach = (oh - 1) * geo.phase_len
        + rows.iter().max().unwrap_or(&0)
        + cols.iter().max().unwrap_or(&0)
        + ow.next_multiple_of(LANES);
    let scratch_len = geo.padded_len().max(reach);
    let planes = out.len() / plane_out;
    let input = |plane: usize| {
        let (n, g) = (plane / t.groups, plane % t.groups);
        &src[(n * t.in_channels + channel(g).0) * plane_in..][..plane_in]
    };
    let per_run = planes.div_ceil(8 * rayon::current_num_threads()).max(1);
    let layer = Layer {
        geo,
        rows,
        cols,
        plane_out,
        groups: t.groups,
        w,
        bias,
    };
    let kernel = |g: usize| channel(g).1;
    out.par_chunks_mut(per_run * plane_out)
        .enumerate()
        .for_each_init(
            // Padding and slack stay zero: `pad` writes only the input's
            // positions, the same for every plane of the call.
            || vec![0f32; scratch_len],
            |padded, (run, out)| {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `suits` (the caller's promise) checked for
                // AVX-512; `padded` holds `reach` values, all a tile reads.
                unsafe {
                    avx512::planes(&layer, run * per_run, &input, &kernel, padded, out)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (&layer, run, &input, &kernel, padded, out);
            },
        );
}

/// What every plane of a [`run`] shares.
struct Layer<'a> {
    geo: &'a Geometry,
    rows: [usize; 3],
    cols: [usize; 3],
    plane_out: usize,
    groups: usize,
    w: &'a [f32],
    bias: Option<&'a [f32]>,
}

/// One padded input plane and what the tiles need to read it.
struct Plane<'a> {
    padded: &'a [f32],
    /// Distance between output rows in `padded` ([`Geometry::phase_len`]).
    pitch: usize,
    /// Tap `(ky, kx)` lies `rows[ky] + cols[kx]` past an output position.
    rows: [usize; 3],
    cols: [usize; 3],
    height: usize,
    width: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, Layer, Plane, TAPS};
    use std::arch::x86_64::*;

    /// Output planes `first ..` of `layer`, one per `plane_out` values of
    /// `out`, each padded into `padded` from `input(plane)` and then
    /// computed. (Asking for the next plane's input from memory meanwhile,
    /// as the direct kernel does, made depthwise 3×3/2 on 56 × 56 inputs
    /// 20 % slower.)
    ///
    /// # Safety
    /// The processor has AVX-512F; `padded` holds every value a tile reads.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn planes<'x>(
        layer: &Layer,
        first: usize,
        input: &impl Fn(usize) -> &'x [f32],
        kernel: &impl Fn(usize) -> usize,
        padded: &mut [f32],
        out: &mut [f32],
    ) {
        for (k, out) in out.chunks_exact_mut(layer.plane_out).enumerate() {
            let plane = first + k;
            layer.geo.pad(input(plane), padded);
            let g = plane % layer.groups;
            let c = kernel(g);
            let weights: [f32; TAPS] = std::array::from_fn(|t| layer.w[c * TAPS + t]);
            let b = layer.bias.map_or(0.0, |b| b[c]);
            let p = Plane {
                padded,
                pitch: layer.geo.phase_len,
                rows: layer.rows,
                cols: layer.cols,
                height: layer.geo.out_h,
                width: layer.geo.out_w,
            };
            // SAFETY: as this function's.
            unsafe { one_plane(&p, &weights, b, out) };
        }
    }

    /// The output plane `out` (`rows × width`) of `p` with `kernel` and
    /// `bias`: register tiles of a few rows × up to 4 vectors.
    ///
    /// # Safety
    /// The processor has AVX-512F; `p.padded` holds every value a tile
    /// reads (up to the last row's last vector at the farthest tap);
    /// `out` holds `rows × width` values.
    #[inline(always)]
    unsafe fn one_plane(p: &Plane, kernel: &[f32; TAPS], bias: f32, out: &mut [f32]) {
        let reach = (p.height - 1) * p.pitch + p.rows.iter().max().unwrap_or(&0);
        let reach = reach + p.cols.iter().max().unwrap_or(&0);
        assert!(p.padded.len() >= reach + p.width.next_multiple_of(LANES));
        assert!(out.len() >= p.height * p.width);
        // SAFETY: AVX-512F (the caller's promise).
        let k: [__m512; TAPS] = std::array::from_fn(|t| unsafe { _mm512_set1_ps(kernel[t]) });
        let vectors = p.width.div_ceil(LANES);
        let mut j0 = 0;
        while j0 < vectors {
            // SAFETY (each call): as this function's.
            j0 += unsafe {
                match vectors - j0 {
                    1 => columns::<1, 8>(p, &k, bias, out, j0),
                    2 => columns::<2, 4>(p, &k, bias, out, j0),
                    3 => columns::<3, 4>(p, &k, bias, out, j0),
                    _ => columns::<4, 4>(p, &k, bias, out, j0),
                }
            };
        }
    }

    /// Vectors `j0 .. j0 + NV` of every row, in tiles of `R` (at most 8)
    /// rows, the rest in one smaller tile. Returns `NV`.
    #[inline(always)]
    unsafe fn columns<const NV: usize, const R: usize>(
        p: &Plane,
        k: &[__m512; TAPS],
        bias: f32,
        out: &mut [f32],
        j0: usize,
    ) -> usize {
        let mut r0 = 0;
        // SAFETY (each call): as `one_plane`'s.
        while r0 + R <= p.height {
            unsafe { tile::<NV, R>(p, k, bias, out, r0, j0) };
            r0 += R;
        }
        // The rest in one tile (a chain of nine dependent multiply-adds
        // per vector stalls on their latency).
        unsafe {
            match p.height - r0 {
                0 => {}
                1 => tile::<NV, 1>(p, k, bias, out, r0, j0),
                2 => tile::<NV, 2>(p, k, bias, out, r0, j0),
                3 => tile::<NV, 3>(p, k, bias, out, r0, j0),
                4 => tile::<NV, 4>(p, k, bias, out, r0, j0),
                5 => tile::<NV, 5>(p, k, bias, out, r0, j0),
                6 => tile::<NV, 6>(p, k, bias, out, r0, j0),
                _ => tile::<NV, 7>(p, k, bias, out, r0, j0),
            }
        }
        NV
    }

    /// Rows `r0 .. r0 + R`, vectors `j0 .. j0 + NV` of the output: `R × NV`
    /// sums in registers over the taps, stored under the row's mask.
    #[inline(always)]
    unsafe fn tile<const NV: usize, const R: usize>(
        p: &Plane,
        k: &[__m512; TAPS],
        bias: f32,
        out: &mut [f32],
        r0: usize,
        j0: usize,
    ) {
        // SAFETY: the caller's promise (see `one_plane`): AVX-512F, and every
        // load and store below stays inside `p.padded` and `out`.
        unsafe {
            let src = p.padded.as_ptr();
            let dst = out.as_mut_ptr();
            let mut acc = [[_mm512_set1_ps(bias); NV]; R];
            for ky in 0..3 {
                for (o, row) in acc.iter_mut().enumerate() {
                    let line = src.add((r0 + o) * p.pitch + p.rows[ky] + j0 * LANES);
                    for (kx, &col) in p.cols.iter().enumerate() {
                        let kt = k[3 * ky + kx];
                        for (j, a) in row.iter_mut().enumerate() {
                            let v = _mm512_loadu_ps(line.add(col + j * LANES));
                            *a = _mm512_fmadd_ps(v, kt, *a);
                        }
                    }
                }
            }
            for (o, row) in acc.iter().enumerate() {
                for (j, a) in row.iter().enumerate() {
                    // Positions `col .. col + n` of row `r0 + o`; the
                    // masked lanes are not touched.
                    let col = (j0 + j) * LANES;
                    let n = (p.width - col).min(LANES);
                    let mask = (((1u32 << n) - 1) & 0xffff) as __mmask16;
                    _mm512_mask_storeu_ps(dst.add((r0 + o) * p.width + col), mask, *a);
                }
            }
        }
    }
}

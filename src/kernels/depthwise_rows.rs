//! Depthwise 3×3 convolution (one input and one output channel per group)
//! on AVX-512, forward and input gradient: each output row is summed
//! straight from the padded, phase-split input plane ([`Geometry`]) in
//! registers and stored into the output, vectors of 16 positions along
//! the row, register tiles of a few rows × up to four vectors, the last
//! vector of a row stored under a mask. At stride 1 (dilation 1) the
//! tile's output rows share the input rows they read, and those come from
//! the input plane itself, the padding as zeros (see `tile`). The input gradient of stride-1
//! layers is such a convolution of the output gradient; that of stride-2
//! layers (padding 1) sums each input row's even and odd columns in a
//! vector each from the output gradient's rows and interleaves them
//! ([`Kind::Halves`]).
//!
//! The [`direct`](super::direct) kernel sums whole padded rows (the
//! padding columns too) into a staging plane and then gathers the output
//! rows out of it (cuts the input gradient's padding off, and merges the
//! stride phases of a stride-2 one), and its auto-vectorised tap loop
//! reloads the tap offsets from the stack. Here
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
//! | 60 ch, 56 × 56, stride 2 | 2 | input gradient | 1.12–1.16 | 0.60 |
//! | 27 ch, 32 × 32, stride 2 | 1 | input gradient | 0.42–0.44 | 0.20–0.22 |
//! | 240 ch, 14 × 14, stride 2, batch 16 | 1 | input gradient | 0.60–0.64 | 0.32–0.34 |
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
/// this module, either with stride 1 and padding at most twice the
/// dilation (its input gradient is then a convolution of the output
/// gradient as well) or with stride 2, padding 1 and dilation 1
/// (ShuffleNet's downsampling layers, see [`halves`]).
pub fn suits_input_grad(s: &Conv2dShape, isa: Isa) -> bool {
    suits(s, isa) && (adjoint(s).is_some() || halves(s).is_some())
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
    let taps = Taps {
        rows: std::array::from_fn(|i| geo.taps[3 * i]),
        cols: std::array::from_fn(|i| geo.taps[i]),
    };
    run(s, &geo, Kind::Taps(taps), s.output(), x, w, bias, y, |g| {
        (source(g), g)
    });
}

/// The input gradient `dx` of a layer that [`suits_input_grad`], from the
/// output gradient `dy`: input channel `j`'s comes from the output
/// channel `reader(j)` that reads it (the identity, or the inverse of a
/// folded shuffle) and its kernel. Shapes: `w` `[C, 1, 3, 3]`, `dy` `[N,
/// C, H_out, W_out]`, `dx` `[N, C, H, W]`, overwritten; the caller has
/// checked the lengths.
///
/// At stride 1, `dx` is the convolution of `dy` with the kernel turned
/// around, padded by `2 · dilation − padding`; at stride 2 see
/// [`halves`]. Each input's sum runs over the original taps that reach it
/// in order from zero, as the direct kernel's input gradient does (same
/// values).
pub fn input_grad(
    s: &Conv2dShape,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    reader: impl Fn(usize) -> usize + Sync,
) {
    let channel = |j| (reader(j), reader(j));
    if let Some(h) = halves(s) {
        let geo = Geometry::new(&h);
        return run(&h, &geo, Kind::Halves, s.input, dy, w, None, dx, channel);
    }
    let a = adjoint(s).expect("suits_input_grad");
    let geo = Geometry::new(&a);
    // The turned-around kernel's tap `8 − t` meets the original tap `t`.
    let taps = Taps {
        rows: std::array::from_fn(|i| geo.taps[3 * (2 - i)]),
        cols: std::array::from_fn(|i| geo.taps[2 - i]),
    };
    run(
        &a,
        &geo,
        Kind::Taps(taps),
        s.input,
        dy,
        w,
        None,
        dx,
        channel,
    );
}

/// For a stride-2 layer with padding 1 and dilation 1: the output
/// gradient's planes padded by one zero on every side (the layout
/// [`Kind::Halves`] reads), as the shape whose input they are.
///
/// Input row `a` gets the gradient of output rows `a / 2` through kernel
/// row 1 when `a` is even, of rows `(a + 1) / 2` and `(a − 1) / 2`
/// through kernel rows 0 and 2 when it is odd; columns alike. So each
/// input row is two vectors, its even and its odd columns, each a few
/// multiply-adds of contiguous output-gradient values, interleaved before
/// they are stored.
fn halves(s: &Conv2dShape) -> Option<Conv2dShape> {
    if s.stride != [2, 2] || s.padding != [1, 1] || s.dilation != [1, 1] || s.group_in() != 1 {
        return None;
    }
    let [oh, ow] = s.output();
    Conv2dShape {
        padding: [1, 1],
        ..Conv2dShape::new(s.batch, s.groups, s.groups, [oh, ow], s.kernel, s.groups)
    }
    .validate()
    .ok()
}

/// For a stride-1 layer: the convolution that maps its output gradient to
/// its input gradient (kernel turned around, not represented here), if
/// the padding allows.
fn adjoint(s: &Conv2dShape) -> Option<Conv2dShape> {
    if s.stride != [1, 1] {
        return None;
    }
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

/// Where a 3×3 correlation's taps lie in the padded layout: tap `(ky,
/// kx)` at `rows[ky] + cols[kx]` past each output position.
#[derive(Clone, Copy)]
struct Taps {
    rows: [usize; 3],
    cols: [usize; 3],
}

/// How the kernel rows of [`Taps`] lie in a padded plane (as a constant
/// for the tiles): one padded row apart, top to bottom (stride 1,
/// dilation 1) ...
const DOWN: u8 = 0;
/// ... or bottom to top (the kernel turned around: the input gradient of
/// such a layer) ...
const UP: u8 = 1;
/// ... or otherwise (strides, dilation).
const APART: u8 = 2;

/// The order ([`DOWN`], [`UP`], [`APART`]) of the kernel rows of `taps` in
/// a padded plane of row pitch `pitch`.
fn row_order(taps: &Taps, pitch: usize) -> u8 {
    let [a, b, c] = taps.rows;
    if b == a + pitch && c == b + pitch {
        DOWN
    } else if b == c + pitch && a == b + pitch {
        UP
    } else {
        APART
    }
}

/// How a plane of a [`run`] is computed from its padded input plane.
#[derive(Clone, Copy)]
enum Kind {
    /// A 3×3 correlation, the taps summed from the bias (or zero) in the
    /// order of the kernel.
    Taps(Taps),
    /// The input gradient of a stride-2 layer from its padded output
    /// gradient (see [`halves`]).
    Halves,
}

impl Kind {
    /// Values a plane's computation reads in the padded layout `geo`, for
    /// outputs of `[height, width]`: past the last output row's last
    /// vector at the farthest tap.
    fn reach(&self, geo: &Geometry, [height, width]: [usize; 2]) -> usize {
        match self {
            Kind::Taps(Taps { rows, cols }) => {
                (height - 1) * geo.phase_len
                    + rows.iter().max().unwrap_or(&0)
                    + cols.iter().max().unwrap_or(&0)
                    + width.next_multiple_of(LANES)
            }
            // The last input row reads padded row `height / 2 + 1`; its
            // last pair of vectors, output-gradient columns up to two past
            // their first.
            Kind::Halves => {
                (height / 2 + 1) * geo.phase_len + width.div_ceil(2 * LANES) * LANES + 2
            }
        }
    }
}

/// The planes of `t` (a depthwise 3×3 convolution, or the input gradient
/// of one, of `src` into `out`, planes of `dims` outputs), each computed
/// as `kind` says from its input plane padded into the layout `geo`:
/// output channel `g` reads the input channel and kernel `channel(g)`
/// names.
#[allow(clippy::too_many_arguments)]
fn run(
    t: &Conv2dShape,
    geo: &Geometry,
    kind: Kind,
    dims: [usize; 2],
    src: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    channel: impl Fn(usize) -> (usize, usize) + Sync,
) {
    let plane_out = dims[0] * dims[1];
    let reach = kind.reach(geo, dims);
    let order = match kind {
        Kind::Taps(t) => row_order(&t, geo.phase_len),
        Kind::Halves => APART,
    };
    // Tiles of rows in order read the input planes themselves; others
    // their padded copies.
    let scratch_len = if order == APART {
        geo.padded_len().max(reach)
    } else {
        0
    };
    let planes = out.len() / plane_out;
    let input = |plane: usize| t.input_group(src, plane / t.groups, channel(plane % t.groups).0);
    let per_run = planes.div_ceil(8 * rayon::current_num_threads()).max(1);
    let layer = Layer {
        geo,
        kind,
        reach,
        dims,
        order,
        input: t.input,
        padding: t.padding,
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
    kind: Kind,
    /// Values of a padded plane the plane's computation reads.
    reach: usize,
    /// Output rows and columns.
    dims: [usize; 2],
    /// The order of the kernel rows ([`row_order`]; [`APART`] for
    /// [`Kind::Halves`]): tiles of rows in order ([`DOWN`], [`UP`]) read
    /// the input planes themselves, others padded copies.
    order: u8,
    /// The input planes' rows and columns, and the padding on their top
    /// and left in the padded layout.
    input: [usize; 2],
    padding: [usize; 2],
    plane_out: usize,
    groups: usize,
    w: &'a [f32],
    bias: Option<&'a [f32]>,
}

/// One padded input plane and what the tiles need to read it.
struct Plane<'a> {
    /// The padded plane (empty where the tiles read `input`).
    padded: &'a [f32],
    /// Distance between rows in `padded` ([`Geometry::phase_len`]).
    pitch: usize,
    /// The input plane itself, `[rows, columns]` of it, and the padding on
    /// its top and left: what tiles of rows in order ([`DOWN`], [`UP`])
    /// read instead of `padded`.
    input: &'a [f32],
    input_dims: [usize; 2],
    padding: [usize; 2],
    /// Output rows and columns.
    height: usize,
    width: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{APART, DOWN, Kind, LANES, Layer, Plane, TAPS, Taps, UP};
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
        let in_place = layer.order != APART;
        assert!(in_place || padded.len() >= layer.reach);
        let [height, width] = layer.dims;
        let pitch = layer.geo.phase_len;
        // (`out` comes in whole planes of `height × width` values.)
        for (k, out) in out.chunks_exact_mut(layer.plane_out).enumerate() {
            let plane = first + k;
            let src = input(plane);
            if !in_place {
                layer.geo.pad(src, padded);
            }
            let c = kernel(plane % layer.groups);
            let k: [__m512; TAPS] = std::array::from_fn(|t| _mm512_set1_ps(layer.w[c * TAPS + t]));
            let p = Plane {
                padded,
                pitch,
                input: src,
                input_dims: layer.input,
                padding: layer.padding,
                height,
                width,
            };
            // SAFETY: as this function's; `padded` holds the `reach`
            // values the plane's tiles read.
            unsafe {
                match layer.kind {
                    Kind::Taps(taps) => {
                        let bias = layer.bias.map_or(0.0, |b| b[c]);
                        one_plane(&p, &taps, layer.order, &k, bias, out)
                    }
                    Kind::Halves => halves_plane(&p, &k, out),
                }
            };
        }
    }

    /// The output plane `out` (`height × width`) of `p`, its taps at
    /// `taps` (kernel rows in `order`, [`row_order`](super::row_order)), with the kernel `k`
    /// (each weight in a whole vector) and `bias`: register tiles of a few
    /// rows × up to 4 vectors.
    ///
    /// # Safety
    /// The processor has AVX-512F; `p.padded` holds every value a tile
    /// reads (up to the last row's last vector at the farthest tap), or,
    /// for rows in order, `p.input` is the whole input plane of
    /// `p.input_dims`; `out` holds `height × width` values.
    #[inline(always)]
    unsafe fn one_plane(
        p: &Plane,
        taps: &Taps,
        order: u8,
        k: &[__m512; TAPS],
        bias: f32,
        out: &mut [f32],
    ) {
        // SAFETY (each call): as this function's.
        unsafe {
            match order {
                DOWN => vectors::<DOWN>(p, taps, k, bias, out),
                UP => vectors::<UP>(p, taps, k, bias, out),
                _ => vectors::<APART>(p, taps, k, bias, out),
            }
        }
    }

    /// [`one_plane`] with the kernel rows in order `O` ([`row_order`](super::row_order)):
    /// the row's vectors in blocks of up to 4.
    ///
    /// # Safety
    /// As [`one_plane`]'s.
    #[inline(always)]
    unsafe fn vectors<const O: u8>(
        p: &Plane,
        taps: &Taps,
        k: &[__m512; TAPS],
        bias: f32,
        out: &mut [f32],
    ) {
        let vectors = p.width.div_ceil(LANES);
        let mut j0 = 0;
        while j0 < vectors {
            // SAFETY (each call): as this function's.
            j0 += unsafe {
                if O == APART {
                    match vectors - j0 {
                        1 => columns::<1, 8, O>(p, taps, k, bias, out, j0),
                        2 => columns::<2, 4, O>(p, taps, k, bias, out, j0),
                        3 => columns::<3, 4, O>(p, taps, k, bias, out, j0),
                        _ => columns::<4, 4, O>(p, taps, k, bias, out, j0),
                    }
                } else {
                    // Tiles that share input rows keep a row's loads and
                    // its lanes' masks in registers as well: 2 vectors × 4
                    // rows at most (× 8 spilled, one thread, 96 planes of
                    // 28 × 28: 0.59 µs a plane against 0.18–0.19), rows of
                    // 3 or more vectors in blocks of 2 (3 × 4 spilled on
                    // 40 × 40: 1.24 µs against 0.40–0.43; 4 × 4 on 56 × 56).
                    match vectors - j0 {
                        1 => columns::<1, 8, O>(p, taps, k, bias, out, j0),
                        _ => columns::<2, 4, O>(p, taps, k, bias, out, j0),
                    }
                }
            };
        }
    }

    /// The input-gradient plane `out` (`height × width`) of a stride-2
    /// layer from `p`, its output gradient padded by one
    /// ([`Kind::Halves`]), with the kernel `k`: tiles of up to 4 input rows ×
    /// up to 2 blocks of 32 columns (a vector of their even and one of
    /// their odd columns each).
    ///
    /// # Safety
    /// The processor has AVX-512F; `p.padded` holds the values
    /// [`Kind::reach`] counts; `out` holds `height × width` values.
    #[inline(always)]
    unsafe fn halves_plane(p: &Plane, k: &[__m512; TAPS], out: &mut [f32]) {
        let blocks = p.width.div_ceil(2 * LANES);
        let mut m0 = 0;
        while m0 < blocks {
            let nb = (blocks - m0).min(2);
            let mut a0 = 0;
            while a0 < p.height {
                let rows = match p.height - a0 {
                    1 => 1,
                    2 | 3 => 2,
                    _ => 4,
                };
                // SAFETY (each call): as this function's.
                unsafe {
                    match (rows, nb) {
                        (1, 1) => halves_tile::<1, 1>(p, k, out, a0, m0),
                        (2, 1) => halves_tile::<2, 1>(p, k, out, a0, m0),
                        (_, 1) => halves_tile::<4, 1>(p, k, out, a0, m0),
                        (1, _) => halves_tile::<1, 2>(p, k, out, a0, m0),
                        (2, _) => halves_tile::<2, 2>(p, k, out, a0, m0),
                        (_, _) => halves_tile::<4, 2>(p, k, out, a0, m0),
                    }
                }
                a0 += rows;
            }
            m0 += nb;
        }
    }

    /// Input rows `a0 .. a0 + R` (`a0` even) × column blocks `m0 .. m0 +
    /// NB` of [`halves_plane`]: per row and block, the sums of its even
    /// and of its odd columns in registers, each over its taps in the
    /// kernel's order from zero (the direct kernel's order, phase by
    /// phase), then interleaved and stored under the row's mask.
    #[inline(always)]
    unsafe fn halves_tile<const R: usize, const NB: usize>(
        p: &Plane,
        k: &[__m512; TAPS],
        out: &mut [f32],
        a0: usize,
        m0: usize,
    ) {
        // SAFETY: the caller's promise (see `halves_plane`): AVX-512F, and
        // every load and store below stays inside `p.padded` and `out`.
        unsafe {
            let src = p.padded.as_ptr();
            let dst = out.as_mut_ptr();
            let mut even = [[_mm512_setzero_ps(); NB]; R];
            let mut odd = [[_mm512_setzero_ps(); NB]; R];
            for o in 0..R {
                let a = a0 + o;
                // (kernel row, padded output-gradient row): an even input
                // row meets output row a / 2 through kernel row 1, an odd
                // one rows (a + 1) / 2 and (a − 1) / 2 through rows 0
                // and 2.
                let taps: &[(usize, usize)] = if a.is_multiple_of(2) {
                    &[(1, a / 2 + 1)]
                } else {
                    &[(0, a.div_ceil(2) + 1), (2, a / 2 + 1)]
                };
                for &(ky, r) in taps {
                    for j in 0..NB {
                        // Even column 2i meets output-gradient column i
                        // through kernel column 1; odd column 2i + 1
                        // columns i + 1 and i through columns 0 and 2.
                        let line = src.add(r * p.pitch + (m0 + j) * LANES);
                        let (at, next) =
                            (_mm512_loadu_ps(line.add(1)), _mm512_loadu_ps(line.add(2)));
                        even[o][j] = _mm512_fmadd_ps(at, k[3 * ky + 1], even[o][j]);
                        odd[o][j] = _mm512_fmadd_ps(next, k[3 * ky], odd[o][j]);
                        odd[o][j] = _mm512_fmadd_ps(at, k[3 * ky + 2], odd[o][j]);
                    }
                }
            }
            let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let high =
                _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            for o in 0..R {
                for j in 0..NB {
                    let col = (m0 + j) * 2 * LANES;
                    let row = dst.add((a0 + o) * p.width + col);
                    for (half, idx) in [low, high].into_iter().enumerate() {
                        let start = col + half * LANES;
                        if start < p.width {
                            let v = _mm512_permutex2var_ps(even[o][j], idx, odd[o][j]);
                            store(row.add(half * LANES), p.width - start, v);
                        }
                    }
                }
            }
        }
    }

    /// Vectors `j0 .. j0 + NV` of every row, in tiles of `R` (at most 8)
    /// rows, the rest in one smaller tile. Returns `NV`.
    #[inline(always)]
    unsafe fn columns<const NV: usize, const R: usize, const O: u8>(
        p: &Plane,
        taps: &Taps,
        k: &[__m512; TAPS],
        bias: f32,
        out: &mut [f32],
        j0: usize,
    ) -> usize {
        let mut r0 = 0;
        // SAFETY (each call): as `one_plane`'s.
        while r0 + R <= p.height {
            unsafe { tile::<NV, R, O>(p, taps, k, bias, out, r0, j0) };
            r0 += R;
        }
        // The rest in one tile (a chain of nine dependent multiply-adds
        // per vector stalls on their latency).
        unsafe {
            match p.height - r0 {
                0 => {}
                1 => tile::<NV, 1, O>(p, taps, k, bias, out, r0, j0),
                2 => tile::<NV, 2, O>(p, taps, k, bias, out, r0, j0),
                3 => tile::<NV, 3, O>(p, taps, k, bias, out, r0, j0),
                4 => tile::<NV, 4, O>(p, taps, k, bias, out, r0, j0),
                5 => tile::<NV, 5, O>(p, taps, k, bias, out, r0, j0),
                6 => tile::<NV, 6, O>(p, taps, k, bias, out, r0, j0),
                _ => tile::<NV, 7, O>(p, taps, k, bias, out, r0, j0),
            }
        }
        NV
    }

    /// Rows `r0 .. r0 + R`, vectors `j0 .. j0 + NV` of the output: `R × NV`
    /// sums in registers over the taps, stored under the row's mask. With
    /// kernel rows one padded row apart ([`DOWN`], [`UP`]) the tile's
    /// output rows share their input rows: each of the `R + 2` is loaded
    /// once per column tap and serves the (up to three) output rows that
    /// read it, each output's taps still added in the kernel's order (the
    /// input rows taken in the order their kernel rows come). That halves
    /// the loads of a 6-row tile, one per multiply-add before: one thread,
    /// batch 1, per plane, 28 × 28 0.30–0.33 → 0.23–0.24 µs, 14 × 14
    /// 0.106 → 0.088, 7 × 7 0.050 → 0.046, 56 × 56 1.12–1.13 → 0.89–0.92.
    /// These tiles read the input plane itself, not a padded copy: a row
    /// of the padding is a zero vector, and lanes outside the input's
    /// columns are masked off the loads (zeros), so each multiply-add
    /// meets the value it met in the padded plane. Without the copy, per
    /// plane: 28 × 28 0.22–0.23 → 0.19–0.20 µs, 14 × 14 0.080–0.082 →
    /// 0.059, 7 × 7 0.045–0.046 → 0.032–0.033, 56 × 56 0.91–0.93 →
    /// 0.76–0.79, 112 × 112 4.6 → 2.6–2.8.
    /// Otherwise ([`APART`]) each output row loads its own from the padded
    /// copy (sharing the even rows' phase of a stride-2 layer's kernel
    /// rows 0 and 2 saved 0–5 %: its time goes to splitting the input into
    /// phases).
    #[inline(always)]
    unsafe fn tile<const NV: usize, const R: usize, const O: u8>(
        p: &Plane,
        taps: &Taps,
        k: &[__m512; TAPS],
        bias: f32,
        out: &mut [f32],
        r0: usize,
        j0: usize,
    ) {
        // SAFETY: the caller's promise (see `one_plane`): AVX-512F, and every
        // load and store below stays inside `p.padded` (or the lanes of
        // `p.input` that its masks leave on) and `out`.
        unsafe {
            let dst = out.as_mut_ptr();
            let mut acc = [[_mm512_set1_ps(bias); NV]; R];
            if O == APART {
                let src = p.padded.as_ptr();
                for ky in 0..3 {
                    for (o, row) in acc.iter_mut().enumerate() {
                        let line = src.add((r0 + o) * p.pitch + taps.rows[ky] + j0 * LANES);
                        for (kx, &col) in taps.cols.iter().enumerate() {
                            let kt = k[3 * ky + kx];
                            for (j, a) in row.iter_mut().enumerate() {
                                let v = _mm512_loadu_ps(line.add(col + j * LANES));
                                *a = _mm512_fmadd_ps(v, kt, *a);
                            }
                        }
                    }
                }
            } else {
                // Input row `i` of the tile (padded row `r0 + i`) meets
                // output row `o` through kernel row `i − o` (DOWN) or
                // `o + 2 − i` (UP), taken in that kernel order. The padded
                // row's values come straight from the input: a row of the
                // padding is zeros, and so are the lanes of a vector
                // outside the input's columns (masked loads), as in the
                // padded plane.
                let [h, w] = p.input_dims.map(|d| d as isize);
                let [top, left] = p.padding.map(|d| d as isize);
                // Per column tap and vector, where lane 0 reads in an
                // input row, and which of its lanes lie in the row: the
                // same for every row of the tile.
                let lanes: [[(isize, __mmask16); NV]; 3] = std::array::from_fn(|kx| {
                    std::array::from_fn(|j| {
                        let x0 = ((j0 + j) * LANES + taps.cols[kx]) as isize - left;
                        let lo = (-x0).clamp(0, LANES as isize) as u32;
                        let hi = (w - x0).clamp(0, LANES as isize) as u32;
                        let bits = |n: u32| ((1u32 << n) - 1) as __mmask16;
                        (x0, bits(hi) & !bits(lo))
                    })
                });
                let src = p.input.as_ptr();
                for step in 0..R + 2 {
                    let i = if O == UP { R + 1 - step } else { step };
                    let y = (r0 + i) as isize - top;
                    let inside = (0..h).contains(&y);
                    for (kx, lanes) in lanes.iter().enumerate() {
                        for (j, &(x0, mask)) in lanes.iter().enumerate() {
                            let v = match inside {
                                true => {
                                    _mm512_maskz_loadu_ps(mask, src.wrapping_offset(y * w + x0))
                                }
                                false => _mm512_setzero_ps(),
                            };
                            for (o, row) in acc.iter_mut().enumerate() {
                                let ky = if O == UP {
                                    (o + 2).wrapping_sub(i)
                                } else {
                                    i.wrapping_sub(o)
                                };
                                if ky < 3 {
                                    row[j] = _mm512_fmadd_ps(v, k[3 * ky + kx], row[j]);
                                }
                            }
                        }
                    }
                }
            }
            for (o, row) in acc.iter().enumerate() {
                for (j, &a) in row.iter().enumerate() {
                    let col = (j0 + j) * LANES;
                    store(dst.add((r0 + o) * p.width + col), p.width - col, a);
                }
            }
        }
    }

    /// Stores the first `left.min(16)` lanes of `v` at `at` (the rest of
    /// an output row from there); the others are not touched.
    ///
    /// # Safety
    /// The processor has AVX-512F; those lanes' places are writable.
    #[inline(always)]
    unsafe fn store(at: *mut f32, left: usize, v: __m512) {
        let n = left.min(LANES);
        let mask = (((1u32 << n) - 1) & 0xffff) as __mmask16;
        // SAFETY: the caller's promise.
        unsafe { _mm512_mask_storeu_ps(at, mask, v) };
    }
}

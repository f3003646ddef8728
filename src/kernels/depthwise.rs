//! Depthwise conv2d (one input and one output channel per group) on small
//! planes, forward and input gradient: [`LANES`] channels of one image side
//! by side, one vector lane per channel, so that 4×4 planes run at full
//! vector width. The per-plane [`direct`](super::direct) kernel pays
//! its set-up (padding, gathering) once per plane, which dominates there.
//!
//! Each output (each input, for the gradient) is a sum over the kernel taps
//! in tap order, starting from the bias (from zero), one fused multiply-add
//! per tap, a tap in the padding adding a zero: the same additions in the
//! same order as the direct kernel, so the results are identical.

use super::conv::Conv2dShape;
use crate::error::Result;
use crate::simd::{Fma, Isa, LANES, Lanes, to_lanes};
use rayon::prelude::*;

/// Largest output plane the lane kernels take. Measured on batch-32
/// ShuffleNet shapes (3×3, 1 thread): twice as fast as the direct kernel
/// for 4×4 outputs, even for 7×7, slower for 14×14, where the direct
/// kernel's per-plane set-up is amortised and the lanes' scalar
/// transposes are not.
const MAX_PLANE: usize = 32;

/// Whether these kernels suit `s`: depthwise with a spatial kernel and
/// small output planes.
pub fn suits(s: &Conv2dShape) -> bool {
    let [oh, ow] = s.output();
    s.group_in() == 1 && s.group_out() == 1 && s.kernel != [1, 1] && oh * ow <= MAX_PLANE
}

/// For each position of one plane and each tap (`[positions × taps]`): the
/// position of the other plane it meets, or that plane's size (a zero
/// slot) where there is none.
///
/// - forward: output position → the input position the tap reads;
/// - adjoint: input position → the output position that reads it through
///   the tap.
fn tap_table(s: &Conv2dShape, adjoint: bool) -> Vec<u32> {
    let [oh, ow] = s.output();
    let [h, w] = s.input;
    let (rows, cols, missing) = if adjoint {
        (h, w, oh * ow)
    } else {
        (oh, ow, h * w)
    };
    let mut table = Vec::with_capacity(rows * cols * s.kernel[0] * s.kernel[1]);
    // The input coordinate `o · stride + k · dilation − pad` along `d`, or
    // the output coordinate whose tap `k` reads input coordinate `i`.
    let meet = |d: usize, at: usize, k: usize| -> Option<usize> {
        let shift = k * s.dilation[d];
        if adjoint {
            let o = (at + s.padding[d]).checked_sub(shift)?;
            (o % s.stride[d] == 0 && o / s.stride[d] < s.output()[d]).then(|| o / s.stride[d])
        } else {
            let i = (at * s.stride[d] + shift).checked_sub(s.padding[d])?;
            (i < s.input[d]).then_some(i)
        }
    };
    let other_cols = if adjoint { ow } else { w };
    for y in 0..rows {
        for x in 0..cols {
            for ky in 0..s.kernel[0] {
                for kx in 0..s.kernel[1] {
                    let at = meet(0, y, ky)
                        .zip(meet(1, x, kx))
                        .map_or(missing, |(r, c)| r * other_cols + c);
                    table.push(at as u32);
                }
            }
        }
    }
    table
}

/// `y = conv2d(x, w) + bias` for a depthwise `s` that [`suits`].
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    s.check_lens(x.len(), w.len(), bias.map(<[f32]>::len), y.len())?;
    correlate_planes(s, false, x, w, bias, y);
    Ok(())
}

/// `dx`, the gradient of `Σ dy · conv2d(x, w)` with respect to `x`, for a
/// depthwise `s` that [`suits`]; `dx` is overwritten.
pub fn input_grad(s: &Conv2dShape, w: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    s.check_grad_lens(&*dx, w, dy, [Some(&*dx), None, None])?;
    correlate_planes(s, true, dy, w, None, dx);
    Ok(())
}

/// The forward pass (`src` the input, `dst` the output) or, with
/// `adjoint`, the input gradient (`src` the output gradient, `dst` the
/// input gradient, no bias): [`correlate`] through the [`tap_table`], per
/// block of channels.
fn correlate_planes(
    s: &Conv2dShape,
    adjoint: bool,
    src: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    dst: &mut [f32],
) {
    let table = tap_table(s, adjoint);
    let [oh, ow] = s.output();
    let (ip, op) = (s.input[0] * s.input[1], oh * ow);
    let (src_plane, dst_plane) = if adjoint { (op, ip) } else { (ip, op) };
    each_block(
        s,
        dst,
        [dst_plane, src_plane],
        |n, c0, out, [lanes, taps]| {
            let channels = out.len() / dst_plane;
            let planes = &src[(n * s.out_channels + c0) * src_plane..][..channels * src_plane];
            if channels < LANES {
                lanes.fill([0.0; LANES]);
            }
            // The slot after the last position stays zero.
            to_lanes(planes, &mut lanes[..src_plane]);
            weight_lanes(w, c0, channels, taps);
            let mut init = [0.0; LANES];
            if let Some(b) = bias {
                init[..channels].copy_from_slice(&b[c0..c0 + channels]);
            }
            correlate_isa(Isa::best(), &table, lanes, taps, &init, out);
        },
    );
}

/// Calls `f(image, first channel, out, scratch)` for every block of up to
/// [`LANES`] channels of every image, in parallel, `out` being the block's
/// planes (`plane` values each) in `dst`. The scratch holds the source
/// planes (`src_plane` values each) in lanes plus a zero slot, and the
/// weights in lanes.
fn each_block(
    s: &Conv2dShape,
    dst: &mut [f32],
    [plane, src_plane]: [usize; 2],
    f: impl Fn(usize, usize, &mut [f32], [&mut [Lanes<f32>]; 2]) + Sync,
) {
    let c = s.out_channels;
    let taps = s.kernel[0] * s.kernel[1];
    let blocks: Vec<(usize, usize, &mut [f32])> = dst
        .chunks_mut(c * plane)
        .enumerate()
        .flat_map(|(n, image)| {
            image
                .chunks_mut(LANES * plane)
                .enumerate()
                .map(move |(b, out)| (n, b * LANES, out))
        })
        .collect();
    blocks.into_par_iter().for_each_init(
        || [src_plane + 1, taps].map(|n| vec![[0f32; LANES]; n]),
        |[src, w], (n, c0, out)| f(n, c0, out, [src, w]),
    );
}

/// The kernels of channels `c0 .. c0 + channels` in lanes: lane `j` of
/// `taps[t]` is tap `t` of channel `c0 + j` (zero past the last channel).
fn weight_lanes(w: &[f32], c0: usize, channels: usize, taps: &mut [Lanes<f32>]) {
    let k = taps.len();
    taps.fill([0.0; LANES]);
    for j in 0..channels {
        for (t, &v) in w[(c0 + j) * k..][..k].iter().enumerate() {
            taps[t][j] = v;
        }
    }
}

/// `out[j][p] = init[j] + Σ_t taps[t][j] · src[table[p][t]][j]` for the
/// `out.len() / positions` planes `j` of `out`, taps in order, one fused
/// multiply-add each.
#[inline(always)]
fn correlate<T: Fma>(
    table: &[u32],
    src: &[Lanes<T>],
    taps: &[Lanes<T>],
    init: &Lanes<T>,
    out: &mut [T],
) {
    let k = taps.len();
    let positions = table.len() / k.max(1);
    let planes = out.len() / positions.max(1);
    for (p, row) in table.chunks_exact(k).enumerate() {
        let mut acc = *init;
        for (w, &at) in taps.iter().zip(row) {
            let v = &src[at as usize];
            for j in 0..LANES {
                acc[j] = w[j].fma(v[j], acc[j]);
            }
        }
        for (j, &a) in acc.iter().enumerate().take(planes) {
            out[j * positions + p] = a;
        }
    }
}

crate::dispatch!(fn correlate_isa<T: Fma>(table: &[u32], src: &[Lanes<T>], taps: &[Lanes<T>], init: &Lanes<T>, out: &mut [T]) => correlate);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{
        assert_backward_matches_reference, assert_forward_matches_reference, test_shape,
    };

    /// Against the reference, and bit for bit against the direct kernel.
    #[test]
    fn matches_the_reference_and_the_direct_kernel() {
        // (batch, channels, h, w, k, stride, pad, dilation, bias)
        let cases = [
            (2, 12, 5, 6, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (1, 21, 7, 7, [3, 3], [2, 2], [1, 1], [1, 1], false),
            (3, 16, 4, 4, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 33, 8, 8, [3, 3], [2, 2], [1, 1], [1, 1], false),
            (2, 5, 9, 8, [5, 5], [2, 2], [2, 2], [1, 1], true),
            (2, 17, 6, 13, [3, 5], [2, 1], [0, 2], [1, 2], false),
            (1, 3, 8, 9, [3, 3], [3, 2], [0, 1], [2, 1], true),
        ];
        for (i, &(batch, c, h, w, k, stride, pad, dil, bias)) in cases.iter().enumerate() {
            let s = test_shape(batch, [c, c, c], [h, w], k, [stride, pad, dil]);
            assert!(suits(&s));
            let grouped = test_shape(batch, [2 * c, 2 * c, c], [h, w], k, [stride, pad, dil]);
            assert!(!suits(&grouped));
            assert_forward_matches_reference(&s, bias, i as u64, |x, w, b, y| {
                forward(&s, x, w, b, y)?;
                let mut direct = vec![0.0; y.len()];
                super::super::direct::forward(&s, x, w, b, &mut direct)?;
                assert_eq!(&y[..], &direct[..], "forward {s:?}");
                Ok(())
            });
            assert_backward_matches_reference(&s, i as u64, |x, w, dy, dx, dw, db| {
                input_grad(&s, w, dy, dx)?;
                let mut direct = vec![0.0; dx.len()];
                let direct_dx = Some(&mut direct[..]);
                super::super::direct::backward(&s, x, w, dy, direct_dx, Some(dw), Some(db))?;
                assert_eq!(&dx[..], &direct[..], "input gradient {s:?}");
                Ok(())
            });
        }
    }
}

//! Depthwise conv2d forward (float32): one input channel per group
//! (`groups == C_in`, `C_out = C_in × multiplier`). Each output row is a sum
//! of shifted input rows scaled by one tap, vectorised along the row. The
//! padding is handled outside the inner loop: each plane is first copied
//! into a zero-bordered buffer, split into `stride_w` column phases so that
//! strided taps also read contiguous runs. One parallel region over
//! (image × output channel).

use super::conv::Conv2dShape;
use crate::error::{Error, Result};
use crate::signal::Scalar;
use crate::simd::Isa;
use rayon::prelude::*;

/// `y = depthwise_conv2d(x, w) + bias`; the shape must have one input
/// channel per group. Same results as
/// [`forward_ref`](super::conv::forward_ref) up to rounding.
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    forward_isa(s, x, w, bias, y, Isa::best())
}

/// [`forward`] with the inner loops compiled for `isa`.
fn forward_isa(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    isa: Isa,
) -> Result<()> {
    if s.group_in() != 1 {
        return Err(Error::invalid(format!(
            "depthwise conv2d needs groups = in_channels, got groups = {} for {} channels",
            s.groups, s.in_channels
        )));
    }
    s.check_lens(x.len(), w.len(), bias.map(<[f32]>::len), y.len())?;
    let geo = Geometry::new(s);
    let taps = s.kernel[0] * s.kernel[1];
    let mult = s.group_out();
    let plane_in = s.input[0] * s.input[1];
    y.par_chunks_mut(geo.out_h * geo.out_w)
        .enumerate()
        .for_each_init(
            || vec![0f32; geo.scratch_len()],
            |scratch, (plane, out)| {
                let (n, o) = (plane / s.out_channels, plane % s.out_channels);
                let src = &x[(n * s.in_channels + o / mult) * plane_in..][..plane_in];
                let kernel = &w[o * taps..][..taps];
                plane_isa(
                    isa,
                    &geo,
                    src,
                    kernel,
                    bias.map_or(0.0, |b| b[o]),
                    scratch,
                    out,
                );
            },
        );
    Ok(())
}

/// Sizes of one depthwise plane and of its padded, phase-split copy.
pub(crate) struct Geometry {
    w: usize,
    out_h: usize,
    out_w: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    /// Rows of the padded input.
    rows: usize,
    /// Length of one phase of a padded row: padded column `c` is stored in
    /// phase `c % stride_w` at index `c / stride_w`.
    phase_len: usize,
    /// Offset of each kernel tap's run from the top-left of its output
    /// row's window in the scratch buffer.
    taps: Vec<usize>,
}

impl Geometry {
    fn new(s: &Conv2dShape) -> Self {
        let [out_h, out_w] = s.output();
        let padded_w = s.input[1] + 2 * s.padding[1];
        let phase_len = padded_w.div_ceil(s.stride[1]);
        let (sw, pl) = (s.stride[1], phase_len + LANES);
        let taps = (0..s.kernel[0] * s.kernel[1])
            .map(|t| {
                let (ky, kx) = (t / s.kernel[1], t % s.kernel[1]);
                let shift = kx * s.dilation[1];
                ky * s.dilation[0] * sw * pl + (shift % sw) * pl + shift / sw
            })
            .collect();
        Geometry {
            w: s.input[1],
            out_h,
            out_w,
            stride: s.stride,
            padding: s.padding,
            rows: s.input[0] + 2 * s.padding[0],
            phase_len,
            taps,
        }
    }

    /// Elements of the padded plane.
    fn padded_len(&self) -> usize {
        self.rows * self.stride[1] * (self.phase_len + LANES)
    }

    /// Padded plane, plus an accumulator plane at the padded row pitch for
    /// unit strides.
    fn scratch_len(&self) -> usize {
        let acc = if self.stride == [1, 1] {
            self.out_h * (self.phase_len + LANES)
        } else {
            0
        };
        self.padded_len() + acc
    }
}

/// Output columns computed together, in registers.
const LANES: usize = 16;

/// One output plane: copies the input plane into `scratch` with a zero
/// border, split into `stride_w` phases so that every tap of every output
/// row reads a contiguous run (with `LANES` of zero slack at the end), then
/// sums the taps. Unit strides treat the plane as one long row at the padded
/// pitch (one long multiply-add per tap, the columns past the output width
/// discarded); other strides sum `LANES` outputs at a time in registers.
#[inline(always)]
fn plane<T: Scalar>(
    g: &Geometry,
    src: &[T],
    kernel: &[T],
    bias: T,
    scratch: &mut [T],
    out: &mut [T],
) {
    let (sw, pl) = (g.stride[1], g.phase_len + LANES);
    let row_len = sw * pl;
    let (scratch, acc_plane) = scratch.split_at_mut(g.padded_len());
    scratch.fill(T::zero());
    for (r, line) in src.chunks_exact(g.w).enumerate() {
        let dst = &mut scratch[(r + g.padding[0]) * row_len..][..row_len];
        // Padded column `c` = input column `c − pad`, stored at phase c % sw.
        if sw == 1 {
            dst[g.padding[1]..][..g.w].copy_from_slice(line);
            continue;
        }
        for q in 0..sw {
            let phase = &mut dst[q * pl..][..pl];
            let first = g.padding[1].saturating_sub(q).div_ceil(sw);
            for (j, slot) in phase.iter_mut().enumerate().skip(first) {
                let Some(&v) = line.get(j * sw + q - g.padding[1]) else {
                    break;
                };
                *slot = v;
            }
        }
    }
    if g.stride == [1, 1] {
        // Output (oy, ox) sits at oy · row_len + ox; the last one needed is
        // (out_h − 1) · row_len + out_w − 1, and every tap offset stays
        // inside the padded plane from there.
        let len = (g.out_h - 1) * row_len + g.out_w;
        let acc = &mut acc_plane[..len];
        acc.fill(bias);
        for (&kv, &offset) in kernel.iter().zip(&g.taps) {
            for (a, &v) in acc.iter_mut().zip(&scratch[offset..offset + len]) {
                *a = *a + kv * v;
            }
        }
        for (oy, row) in out.chunks_exact_mut(g.out_w).enumerate() {
            row.copy_from_slice(&acc[oy * row_len..][..g.out_w]);
        }
        return;
    }
    for (oy, row) in out.chunks_exact_mut(g.out_w).enumerate() {
        let top = &scratch[oy * g.stride[0] * row_len..];
        for x0 in (0..g.out_w).step_by(LANES) {
            let mut acc = [bias; LANES];
            for (&kv, &offset) in kernel.iter().zip(&g.taps) {
                let run: &[T; LANES] = top[offset + x0..][..LANES]
                    .try_into()
                    .expect("LANES values");
                for i in 0..LANES {
                    acc[i] = acc[i] + kv * run[i];
                }
            }
            let n = LANES.min(g.out_w - x0);
            row[x0..x0 + n].copy_from_slice(&acc[..n]);
        }
    }
}

crate::dispatch!(fn plane_isa<T: Scalar>(g: &Geometry, src: &[T], kernel: &[T], bias: T, scratch: &mut [T], out: &mut [T]) => plane);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::assert_forward_matches_reference;

    #[test]
    fn matches_the_reference() {
        // (batch, channels, multiplier, h, w, k, stride, pad, dilation, bias)
        let cases = [
            (2, 12, 1, 9, 11, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (1, 12, 1, 11, 9, [3, 3], [2, 2], [1, 1], [1, 1], false),
            (2, 8, 1, 9, 9, [3, 3], [1, 1], [2, 2], [2, 2], true),
            (3, 6, 1, 9, 8, [5, 5], [2, 2], [2, 2], [1, 1], false),
            (1, 4, 2, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 5, 1, 6, 13, [3, 5], [2, 1], [0, 2], [1, 2], false),
            (1, 3, 1, 4, 4, [3, 3], [2, 2], [1, 1], [1, 1], true),
        ];
        for (i, &(batch, c, mult, h, w, k, stride, pad, dil, bias)) in cases.iter().enumerate() {
            let s = Conv2dShape {
                batch,
                in_channels: c,
                out_channels: c * mult,
                input: [h, w],
                kernel: k,
                stride,
                padding: pad,
                dilation: dil,
                groups: c,
            }
            .validate()
            .unwrap();
            for isa in Isa::available() {
                assert_forward_matches_reference(&s, bias, i as u64, |x, w, b, y| {
                    forward_isa(&s, x, w, b, y, isa)
                });
            }
        }
    }

    #[test]
    fn refuses_grouped_shapes() {
        let s = Conv2dShape {
            batch: 1,
            in_channels: 4,
            out_channels: 4,
            input: [3, 3],
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 2,
        };
        assert!(forward(&s, &[0.0; 36], &[0.0; 72], None, &mut [0.0; 36]).is_err());
    }
}

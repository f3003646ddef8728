//! Direct grouped conv2d (float32) for groups with few input channels:
//! depthwise layers (one input channel per group, any multiplier) and
//! ResNeXt's 3×3 layers (4–16 channels per group), forward and backward.
//!
//! Each task takes one (image, group). Its input planes are copied into the
//! padded, stride-phase-split layout of [`Geometry`], where every kernel
//! tap reads the plane at a fixed offset; outputs are then computed in
//! blocks of [`BLOCK`] positions for up to four output channels at once,
//! the accumulators staying in vector registers while the loop runs over
//! input channels and taps. One parallel region over (image × group).

use super::conv::{Conv2dShape, weight_grad_tasks};
use super::phase::Geometry;
use crate::error::Result;
use crate::signal::Scalar;
use crate::simd::{Fma, Isa};
use rayon::prelude::*;

/// Output positions per register block (two AVX-512 vectors).
const BLOCK: usize = 32;

/// Most output channels computed together (accumulators: `CO_BLOCK ×
/// BLOCK` values, 16 AVX-512 registers).
const CO_BLOCK: usize = 8;

/// Whether the direct kernels suit `s`: a kernel larger than 1×1 and at
/// most 16 input channels per group (beyond that im2col + GEMM wins).
pub fn suits(s: &Conv2dShape) -> bool {
    s.kernel != [1, 1] && s.group_in() <= 16
}

/// Sizes of one (image, group) task and of its scratch buffers.
pub(crate) struct Plan {
    geo: Geometry,
    cig: usize,
    cog: usize,
    taps: usize,
    plane_in: usize,
    plane_out: usize,
    /// Distance between padded planes: the layout plus a block of slack,
    /// rounded to whole blocks, so that whole blocks can be read and written
    /// past the last output.
    padded_pitch: usize,
    /// Distance between accumulator planes: `acc_len` rounded up to blocks.
    acc_pitch: usize,
    /// The largest tap offset; output gradients are stored after this many
    /// zeros so that the input gradient reads them at `max_offset − offset`.
    max_offset: usize,
    /// The stride-phase blocks of the padded layout, for the input gradient.
    phases: Vec<Phase>,
    /// Distance between output-gradient planes in the input-gradient layout.
    dy_pitch: usize,
}

/// One stride-phase block of the padded layout (`base ..` for one block's
/// length) and the taps that read from it: only they carry gradient back to
/// it, at `offsets[j] = max_offset − (taps offset − base)` in the
/// output-gradient layout.
struct Phase {
    base: usize,
    taps: Vec<usize>,
    offsets: Vec<usize>,
}

impl Plan {
    fn new(s: &Conv2dShape) -> Plan {
        let geo = Geometry::new(s);
        let padded_pitch = (geo.padded_len() + BLOCK).next_multiple_of(BLOCK);
        let acc_pitch = geo.acc_len().next_multiple_of(BLOCK);
        let [oh, ow] = s.output();
        let max_offset = geo.taps.iter().copied().max().unwrap_or(0);
        let block = geo.block_len();
        let phases = (0..s.stride[0] * s.stride[1])
            .map(|b| {
                let taps: Vec<usize> = (0..geo.taps.len())
                    .filter(|&t| geo.taps[t] / block == b)
                    .collect();
                Phase {
                    base: b * block,
                    offsets: taps
                        .iter()
                        .map(|&t| max_offset - (geo.taps[t] - b * block))
                        .collect(),
                    taps,
                }
            })
            .collect();
        Plan {
            max_offset,
            phases,
            dy_pitch: max_offset + padded_pitch,
            cig: s.group_in(),
            cog: s.group_out(),
            taps: s.kernel[0] * s.kernel[1],
            plane_in: s.input[0] * s.input[1],
            plane_out: oh * ow,
            padded_pitch,
            acc_pitch,
            geo,
        }
    }

    /// Scratch of one task: the padded input planes, then the accumulators
    /// (or the output gradients in the input-gradient layout, which is
    /// larger).
    fn scratch(&self) -> Vec<f32> {
        vec![0f32; self.cig * self.padded_pitch + self.cog * self.dy_pitch]
    }
}

/// `y = conv2d(x, w) + bias`, same results as
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

fn forward_isa(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    isa: Isa,
) -> Result<()> {
    s.check_lens(x.len(), w.len(), bias.map(<[f32]>::len), y.len())?;
    let p = Plan::new(s);
    y.par_chunks_mut(p.cog * p.plane_out)
        .enumerate()
        .for_each_init(
            || p.scratch(),
            |scratch, (task, out)| {
                let (n, g) = (task / s.groups, task % s.groups);
                let (xs, ws) = (s.input_group(x, n, g), s.weight_group(w, g));
                let bs = bias.map_or(&[][..], |b| &b[g * p.cog..][..p.cog]);
                forward_group_isa(isa, &p, xs, ws, bs, scratch, out);
            },
        );
    Ok(())
}

/// Pads the `cig` input planes of `x` into `padded` (one plane per
/// `padded_pitch`, slack zeroed).
#[inline(always)]
fn pad_planes<T: Scalar>(p: &Plan, x: &[T], padded: &mut [T]) {
    for (src, dst) in x
        .chunks_exact(p.plane_in)
        .zip(padded.chunks_exact_mut(p.padded_pitch))
    {
        p.geo.pad(src, dst);
    }
}

/// One (image, group) forward task: `out` holds the group's `cog` output
/// planes; `bias` is empty or holds the group's `cog` biases.
#[inline(always)]
fn forward_group<T: Fma>(p: &Plan, x: &[T], w: &[T], bias: &[T], scratch: &mut [T], out: &mut [T]) {
    let (padded, acc) = scratch.split_at_mut(p.cig * p.padded_pitch);
    pad_planes(p, x, padded);
    let src = Planes {
        data: padded,
        pitch: p.padded_pitch,
        count: p.cig,
        offsets: &p.geo.taps,
    };
    correlate(&src, w, bias, acc, [p.acc_pitch, p.acc_pitch], p.cog);
    for (o, a) in out
        .chunks_exact_mut(p.plane_out)
        .zip(acc.chunks_exact(p.acc_pitch))
    {
        p.geo.gather_outputs(a, o);
    }
}

/// Input planes of a correlation: `count` planes `pitch` apart in `data`,
/// read at `offsets[t]` (plus the position) for tap `t`.
struct Planes<'a, T> {
    data: &'a [T],
    pitch: usize,
    count: usize,
    offsets: &'a [usize],
}

/// `dst[c][i] = bias[c] + Σ_{k, t} w[c][k][t] · src[k][offsets[t] + i]` for
/// `outputs` planes `pitch` apart in `dst` (`w`: `[outputs][src.count][taps]`,
/// `bias` empty or one value per output); `i` runs over whole blocks
/// covering `0 .. len` (`[pitch, len]`). Both the forward pass and the
/// input gradient are this.
#[inline(always)]
fn correlate<T: Fma>(
    src: &Planes<T>,
    w: &[T],
    bias: &[T],
    dst: &mut [T],
    pitch_len: [usize; 2],
    outputs: usize,
) {
    let mut c = 0;
    while c < outputs {
        c += match outputs - c {
            1 => correlate_block::<T, 1>(src, w, bias, c, dst, pitch_len),
            2 => correlate_block::<T, 2>(src, w, bias, c, dst, pitch_len),
            3 => correlate_block::<T, 3>(src, w, bias, c, dst, pitch_len),
            4..CO_BLOCK => correlate_block::<T, 4>(src, w, bias, c, dst, pitch_len),
            _ => correlate_block::<T, CO_BLOCK>(src, w, bias, c, dst, pitch_len),
        };
    }
}

/// Outputs `c0 .. c0 + CO` of [`correlate`], block by block, the
/// accumulators held in registers across input planes and taps.
#[inline(always)]
fn correlate_block<T: Fma, const CO: usize>(
    src: &Planes<T>,
    w: &[T],
    bias: &[T],
    c0: usize,
    dst: &mut [T],
    [pitch, len]: [usize; 2],
) -> usize {
    let taps = src.offsets.len();
    for start in (0..len).step_by(BLOCK) {
        let mut a = [[T::zero(); BLOCK]; CO];
        for (c, row) in a.iter_mut().enumerate() {
            if let Some(&b) = bias.get(c0 + c) {
                *row = [b; BLOCK];
            }
        }
        for k in 0..src.count {
            let plane = &src.data[k * src.pitch + start..];
            for (t, &offset) in src.offsets.iter().enumerate() {
                let v: &[T; BLOCK] = plane[offset..offset + BLOCK].try_into().expect("block");
                for (c, row) in a.iter_mut().enumerate() {
                    let wv = w[((c0 + c) * src.count + k) * taps + t];
                    for (r, &x) in row.iter_mut().zip(v) {
                        *r = wv.fma(x, *r);
                    }
                }
            }
        }
        for (c, row) in a.iter().enumerate() {
            let out: &mut [T; BLOCK] = (&mut dst[(c0 + c) * pitch + start..][..BLOCK])
                .try_into()
                .expect("block");
            *out = *row;
        }
    }
    CO
}

/// Gradients of `Σ dy · conv2d(x, w)`, each computed only when its buffer
/// is given (and overwritten). `dx`: one task per (image, group) computes
/// the padded input planes' gradients as a correlation of the output
/// gradients with the transposed kernel read at reversed tap offsets (the
/// adjoint of the forward pass, gathered rather than scattered so that
/// every value is written once), then cuts them back. `dw`: dot products of spread
/// output gradients with shifted padded inputs, summed over the batch by
/// [`weight_grad_tasks`] (deterministic for a fixed thread count).
pub fn backward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    backward_isa(s, x, w, dy, [dx, dw, db], Isa::best())
}

fn backward_isa(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [dx, dw, db]: [Option<&mut [f32]>; 3],
    isa: Isa,
) -> Result<()> {
    s.check_grad_lens(x, w, dy, [dx.as_deref(), dw.as_deref(), db.as_deref()])?;
    let p = Plan::new(s);
    if let Some(dx) = dx {
        // Per phase, the weights of its taps as [group][C_in/g][C_out/g][taps].
        let wts: Vec<Vec<f32>> = p
            .phases
            .iter()
            .map(|ph| {
                let mut out = Vec::with_capacity(s.groups * p.cig * p.cog * ph.taps.len());
                for g in 0..s.groups {
                    for ci in 0..p.cig {
                        for co in 0..p.cog {
                            let kernel =
                                &s.weight_group(w, g)[(co * p.cig + ci) * p.taps..][..p.taps];
                            out.extend(ph.taps.iter().map(|&t| kernel[t]));
                        }
                    }
                }
                out
            })
            .collect();
        dx.par_chunks_mut(p.cig * p.plane_in)
            .enumerate()
            .for_each_init(
                || p.scratch(),
                |scratch, (task, dx)| {
                    let (n, g) = (task / s.groups, task % s.groups);
                    input_grad_group_isa(isa, &p, s.output_group(dy, n, g), &wts, g, scratch, dx);
                },
            );
    }
    if let Some(dw) = dw {
        weight_grad_tasks(
            s,
            dw,
            || p.scratch(),
            |scratch, images, g, dw, _| {
                dw.fill(0.0);
                for n in images {
                    let xs = s.input_group(x, n, g);
                    weight_grad_group_isa(isa, &p, xs, s.output_group(dy, n, g), scratch, dw);
                }
            },
        );
    }
    if let Some(db) = db {
        super::conv::bias_grad(s, dy, db);
    }
    Ok(())
}

/// Spreads the `cog` output-gradient planes of `dy` to the accumulator
/// layout (pitch `phase_len`, zeros elsewhere), planes `pitch` apart, each
/// after `lead` zeros.
#[inline(always)]
fn spread_planes<T: Scalar>(p: &Plan, dy: &[T], acc: &mut [T], pitch: usize, lead: usize) {
    for (src, dst) in dy
        .chunks_exact(p.plane_out)
        .zip(acc.chunks_exact_mut(pitch))
    {
        dst[..lead].fill(T::zero());
        p.geo.spread(src, &mut dst[lead..]);
    }
}

/// One (image, group) input-gradient task: `wts[phase]` holds each
/// group's kernel taps of that phase transposed to
/// `[C_in/g][C_out/g][taps]`; `dx` receives the group's `cig` input planes.
#[inline(always)]
fn input_grad_group<T: Fma>(
    p: &Plan,
    dy: &[T],
    wts: &[Vec<T>],
    g: usize,
    scratch: &mut [T],
    dx: &mut [T],
) {
    let (padded, dys) = scratch.split_at_mut(p.cig * p.padded_pitch);
    spread_planes(p, dy, dys, p.dy_pitch, p.max_offset);
    // In layout order: each phase's rounding overrun is rewritten by the next.
    for (ph, wt) in p.phases.iter().zip(wts) {
        let per_group = p.cig * p.cog * ph.taps.len();
        let src = Planes {
            data: dys,
            pitch: p.dy_pitch,
            count: p.cog,
            offsets: &ph.offsets,
        };
        let pitch_len = [p.padded_pitch, p.geo.block_len()];
        correlate(
            &src,
            &wt[g * per_group..][..per_group],
            &[],
            &mut padded[ph.base..],
            pitch_len,
            p.cig,
        );
    }
    for (src, dst) in padded
        .chunks_exact(p.padded_pitch)
        .zip(dx.chunks_exact_mut(p.plane_in))
    {
        p.geo.unpad(src, dst);
    }
}

/// Adds one image's contribution to a group's weight gradient:
/// `dw[c][ci][t] += Σ_i dy[c][i] · padded[ci][taps[t] + i]`.
#[inline(always)]
fn weight_grad_group<T: Fma>(p: &Plan, x: &[T], dy: &[T], scratch: &mut [T], dw: &mut [T]) {
    let (padded, acc) = scratch.split_at_mut(p.cig * p.padded_pitch);
    pad_planes(p, x, padded);
    spread_planes(p, dy, acc, p.acc_pitch, 0);
    let len = p.geo.acc_len();
    for (c, dw_c) in dw.chunks_exact_mut(p.cig * p.taps).enumerate() {
        let g = &acc[c * p.acc_pitch..][..len];
        for (ci, dw_ci) in dw_c.chunks_exact_mut(p.taps).enumerate() {
            let plane = &padded[ci * p.padded_pitch..];
            for (d, &offset) in dw_ci.iter_mut().zip(&p.geo.taps) {
                *d = *d + crate::simd::dot(g, &plane[offset..offset + len]);
            }
        }
    }
}

crate::dispatch!(fn forward_group_isa<T: Fma>(p: &Plan, x: &[T], w: &[T], bias: &[T], scratch: &mut [T], out: &mut [T]) => forward_group);
crate::dispatch!(fn input_grad_group_isa<T: Fma>(p: &Plan, dy: &[T], wts: &[Vec<T>], g: usize, scratch: &mut [T], dx: &mut [T]) => input_grad_group);
crate::dispatch!(fn weight_grad_group_isa<T: Fma>(p: &Plan, x: &[T], dy: &[T], scratch: &mut [T], dw: &mut [T]) => weight_grad_group);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{
        assert_backward_matches_reference, assert_forward_matches_reference, test_shape,
    };

    #[test]
    fn matches_the_reference() {
        // (batch, c_in, c_out, groups, h, w, k, stride, pad, dilation, bias)
        let cases = [
            (2, 12, 12, 12, 9, 11, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (1, 12, 12, 12, 11, 9, [3, 3], [2, 2], [1, 1], [1, 1], false),
            (2, 8, 8, 8, 9, 9, [3, 3], [1, 1], [2, 2], [2, 2], true),
            (3, 6, 6, 6, 9, 8, [5, 5], [2, 2], [2, 2], [1, 1], false),
            (1, 4, 8, 4, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 5, 5, 5, 6, 13, [3, 5], [2, 1], [0, 2], [1, 2], false),
            (1, 3, 3, 3, 4, 4, [3, 3], [2, 2], [1, 1], [1, 1], true),
            (3, 5, 15, 5, 10, 7, [3, 3], [2, 2], [1, 1], [2, 1], false),
            (2, 4, 4, 4, 8, 9, [3, 3], [3, 2], [0, 1], [1, 1], true),
            // Grouped, several channels per group (ResNeXt-like), odd sizes.
            (2, 16, 16, 4, 9, 7, [3, 3], [1, 1], [1, 1], [1, 1], false),
            (3, 12, 18, 3, 8, 8, [3, 3], [2, 2], [1, 1], [1, 1], true),
            (1, 14, 14, 2, 7, 5, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 6, 10, 2, 9, 10, [5, 3], [2, 1], [2, 1], [1, 2], false),
            (5, 3, 8, 1, 13, 11, [7, 7], [2, 2], [3, 3], [1, 1], true),
        ];
        for (i, &(batch, cin, cout, groups, h, w, k, stride, pad, dil, bias)) in
            cases.iter().enumerate()
        {
            let s = test_shape(batch, [cin, cout, groups], [h, w], k, [stride, pad, dil]);
            for isa in Isa::available() {
                assert_forward_matches_reference(&s, bias, i as u64, |x, w, b, y| {
                    forward_isa(&s, x, w, b, y, isa)
                });
                assert_backward_matches_reference(&s, i as u64, |x, w, dy, dx, dw, db| {
                    backward_isa(&s, x, w, dy, [Some(dx), Some(dw), Some(db)], isa)
                });
            }
        }
    }
}

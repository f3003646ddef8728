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
    /// so that whole blocks can be read and written past the last output.
    padded_pitch: usize,
    /// Distance between accumulator planes: `acc_len` rounded up to blocks.
    acc_pitch: usize,
}

impl Plan {
    fn new(s: &Conv2dShape) -> Plan {
        let geo = Geometry::new(s);
        let padded_pitch = geo.padded_len() + BLOCK;
        let acc_pitch = geo.acc_len().next_multiple_of(BLOCK);
        let [oh, ow] = s.output();
        Plan {
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

    /// Scratch of one task: the padded input planes, then the accumulators.
    fn scratch(&self) -> Vec<f32> {
        vec![0f32; self.cig * self.padded_pitch + self.cog * self.acc_pitch]
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
    let group_w = p.cog * p.cig * p.taps;
    y.par_chunks_mut(p.cog * p.plane_out)
        .enumerate()
        .for_each_init(
            || p.scratch(),
            |scratch, (task, out)| {
                let (n, g) = (task / s.groups, task % s.groups);
                let xs = &x[(n * s.in_channels + g * p.cig) * p.plane_in..][..p.cig * p.plane_in];
                let ws = &w[g * group_w..][..group_w];
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
    let mut co = 0;
    while co < p.cog {
        co += match p.cog - co {
            1 => forward_block::<T, 1>(p, padded, w, bias, co, acc),
            2 => forward_block::<T, 2>(p, padded, w, bias, co, acc),
            3 => forward_block::<T, 3>(p, padded, w, bias, co, acc),
            4..CO_BLOCK => forward_block::<T, 4>(p, padded, w, bias, co, acc),
            _ => forward_block::<T, CO_BLOCK>(p, padded, w, bias, co, acc),
        };
    }
    for (o, a) in out
        .chunks_exact_mut(p.plane_out)
        .zip(acc.chunks_exact(p.acc_pitch))
    {
        p.geo.gather_outputs(a, o);
    }
}

/// Output channels `co0 .. co0 + CO` of one task, block by block:
/// `acc[c][i] = bias[c] + Σ_{ci, t} w[c][ci][t] · padded[ci][taps[t] + i]`.
#[inline(always)]
fn forward_block<T: Fma, const CO: usize>(
    p: &Plan,
    padded: &[T],
    w: &[T],
    bias: &[T],
    co0: usize,
    acc: &mut [T],
) -> usize {
    let (cig, taps) = (p.cig, p.taps);
    for start in (0..p.acc_pitch).step_by(BLOCK) {
        let mut a = [[T::zero(); BLOCK]; CO];
        for (c, row) in a.iter_mut().enumerate() {
            if let Some(&b) = bias.get(co0 + c) {
                *row = [b; BLOCK];
            }
        }
        for ci in 0..cig {
            let plane = &padded[ci * p.padded_pitch + start..];
            for (t, &offset) in p.geo.taps.iter().enumerate() {
                let v: &[T; BLOCK] = plane[offset..offset + BLOCK].try_into().expect("block");
                for (c, row) in a.iter_mut().enumerate() {
                    let wv = w[((co0 + c) * cig + ci) * taps + t];
                    for (r, &x) in row.iter_mut().zip(v) {
                        *r = wv.fma(x, *r);
                    }
                }
            }
        }
        for (c, row) in a.iter().enumerate() {
            let dst: &mut [T; BLOCK] = (&mut acc[(co0 + c) * p.acc_pitch + start..][..BLOCK])
                .try_into()
                .expect("block");
            *dst = *row;
        }
    }
    CO
}

/// Gradients of `Σ dy · conv2d(x, w)`, each computed only when its buffer
/// is given (and overwritten). `dx`: one task per (image, group) adds every
/// output gradient, tap by tap, onto padded input planes (the adjoint of
/// the forward pass) and cuts them back. `dw`: dot products of spread
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
    let group_w = p.cog * p.cig * p.taps;
    let dy_group = |n: usize, g: usize| {
        &dy[(n * s.out_channels + g * p.cog) * p.plane_out..][..p.cog * p.plane_out]
    };
    if let Some(dx) = dx {
        dx.par_chunks_mut(p.cig * p.plane_in)
            .enumerate()
            .for_each_init(
                || p.scratch(),
                |scratch, (task, dx)| {
                    let (n, g) = (task / s.groups, task % s.groups);
                    let ws = &w[g * group_w..][..group_w];
                    input_grad_group_isa(isa, &p, dy_group(n, g), ws, scratch, dx);
                },
            );
    }
    if let Some(dw) = dw {
        weight_grad_tasks(
            s,
            dw,
            || p.scratch(),
            |scratch, n, g, dw, first, _| {
                if first {
                    dw.fill(0.0);
                }
                let xs = &x[(n * s.in_channels + g * p.cig) * p.plane_in..][..p.cig * p.plane_in];
                weight_grad_group_isa(isa, &p, xs, dy_group(n, g), scratch, dw);
            },
        );
    }
    if let Some(db) = db {
        super::conv::bias_grad(s, dy, db);
    }
    Ok(())
}

/// Spreads the `cog` output-gradient planes of `dy` to the accumulator
/// layout (pitch `phase_len`, zeros elsewhere).
#[inline(always)]
fn spread_planes<T: Scalar>(p: &Plan, dy: &[T], acc: &mut [T]) {
    for (src, dst) in dy
        .chunks_exact(p.plane_out)
        .zip(acc.chunks_exact_mut(p.acc_pitch))
    {
        p.geo.spread(src, dst);
    }
}

/// One (image, group) input-gradient task: `dx` receives the group's
/// `cig` input planes.
#[inline(always)]
fn input_grad_group<T: Fma>(p: &Plan, dy: &[T], w: &[T], scratch: &mut [T], dx: &mut [T]) {
    let (padded, acc) = scratch.split_at_mut(p.cig * p.padded_pitch);
    spread_planes(p, dy, acc);
    padded.fill(T::zero());
    let mut co = 0;
    while co < p.cog {
        co += match p.cog - co {
            1 => input_grad_block::<T, 1>(p, acc, w, co, padded),
            2 => input_grad_block::<T, 2>(p, acc, w, co, padded),
            3 => input_grad_block::<T, 3>(p, acc, w, co, padded),
            4..CO_BLOCK => input_grad_block::<T, 4>(p, acc, w, co, padded),
            _ => input_grad_block::<T, CO_BLOCK>(p, acc, w, co, padded),
        };
    }
    for (src, dst) in padded
        .chunks_exact(p.padded_pitch)
        .zip(dx.chunks_exact_mut(p.plane_in))
    {
        p.geo.unpad(src, dst);
    }
}

/// Adds output channels `co0 .. co0 + CO`'s gradients onto the padded input
/// planes: `padded[ci][taps[t] + i] += Σ_c w[c][ci][t] · acc[c][i]`.
#[inline(always)]
fn input_grad_block<T: Fma, const CO: usize>(
    p: &Plan,
    acc: &[T],
    w: &[T],
    co0: usize,
    padded: &mut [T],
) -> usize {
    let (cig, taps) = (p.cig, p.taps);
    for start in (0..p.acc_pitch).step_by(BLOCK) {
        let g: [&[T; BLOCK]; CO] = std::array::from_fn(|c| {
            acc[(co0 + c) * p.acc_pitch + start..][..BLOCK]
                .try_into()
                .expect("block")
        });
        for ci in 0..cig {
            let plane = &mut padded[ci * p.padded_pitch + start..];
            for (t, &offset) in p.geo.taps.iter().enumerate() {
                let mut sum = [T::zero(); BLOCK];
                for (c, gc) in g.iter().enumerate() {
                    let wv = w[((co0 + c) * cig + ci) * taps + t];
                    for (s, &v) in sum.iter_mut().zip(gc.iter()) {
                        *s = wv.fma(v, *s);
                    }
                }
                for (d, s) in plane[offset..offset + BLOCK].iter_mut().zip(&sum) {
                    *d = *d + *s;
                }
            }
        }
    }
    CO
}

/// Adds one image's contribution to a group's weight gradient:
/// `dw[c][ci][t] += Σ_i dy[c][i] · padded[ci][taps[t] + i]`.
#[inline(always)]
fn weight_grad_group<T: Fma>(p: &Plan, x: &[T], dy: &[T], scratch: &mut [T], dw: &mut [T]) {
    let (padded, acc) = scratch.split_at_mut(p.cig * p.padded_pitch);
    pad_planes(p, x, padded);
    spread_planes(p, dy, acc);
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
crate::dispatch!(fn input_grad_group_isa<T: Fma>(p: &Plan, dy: &[T], w: &[T], scratch: &mut [T], dx: &mut [T]) => input_grad_group);
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
